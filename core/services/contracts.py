"""The contracts of the metric versions, compiled once per version and kept per process
for ingestion (API.md §18).

Each process holds, per metric, its latest version number and the compiled contract of
every version. Ingestion checks each event against the version in force at its timestamp
and passes the version numbers it used to the statement that stores the events; that
statement stores nothing if a metric has a newer version by then (`Stale`), and ingestion
reloads those metrics and checks again. So every stored event was checked against the
catalog as of the statement that stored it, and a contract change takes effect on every
pod at its commit, with no polling and no per-event query.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres import metrics as metric_rows
from core.domain.contracts import CompiledContract, Contract

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stamp(version: int, created_at: datetime) -> str:
    """A metric's latest version as the store statement computes it (version_stamp in
    core/adapters/postgres/events.py): its number and creation instant in microseconds,
    so a metric recreated under the same key (a test's fresh catalog) never matches."""
    return f"{version}:{(created_at - EPOCH) // timedelta(microseconds=1)}"


@dataclass(frozen=True)
class _Metric:
    latest: str  # the stamp of the latest version; "": no such metric (yet)
    starts: tuple[datetime, ...]
    versions: tuple[int, ...]
    contracts: tuple[CompiledContract | None, ...]

    def at(self, instant: datetime) -> tuple[int | None, CompiledContract | None]:
        """The version in force at `instant` and its contract (None, None before the first)."""
        if len(self.starts) == 1:  # most metrics: no bisection
            return (
                (self.versions[0], self.contracts[0]) if instant >= self.starts[0] else (None, None)
            )
        index = bisect.bisect_right(self.starts, instant) - 1
        if index < 0:
            return None, None
        return self.versions[index], self.contracts[index]

    @property
    def has_contracts(self) -> bool:
        return any(contract is not None for contract in self.contracts)


def compile_rows(rows: Iterable[Mapping[str, Any]]) -> _Metric:
    ordered = sorted(rows, key=lambda row: int(row["version"]))
    return _Metric(
        latest=stamp(int(ordered[-1]["version"]), ordered[-1]["created_at"]) if ordered else "",
        starts=tuple(row["effective_from"] for row in ordered),
        versions=tuple(int(row["version"]) for row in ordered),
        contracts=tuple(
            None
            if row["contract"] is None
            else CompiledContract(Contract.model_validate(row["contract"]))
            for row in ordered
        ),
    )


class ContractBook:
    """The process's compiled contracts, per metric key."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def ensure(self, connection: Connection, keys: Iterable[str]) -> None:
        """Load the metrics among `keys` this process has not seen (one query)."""
        missing = sorted(set(keys) - self._metrics.keys())
        if missing:
            self._load(connection, missing)

    def reload(self, connection: Connection, keys: Iterable[str]) -> None:
        self._load(connection, sorted(set(keys)))

    def _load(self, connection: Connection, keys: list[str]) -> None:
        found = metric_rows.versions(connection, keys)
        compiled = {key: compile_rows(found.get(key, [])) for key in keys}
        with self._lock:
            self._metrics.update(compiled)

    def latest(self, keys: Iterable[str]) -> dict[str, str]:
        return {key: self._metrics[key].latest for key in keys}

    def at(self, key: str, instant: datetime) -> tuple[int | None, CompiledContract | None]:
        return self._metrics[key].at(instant)

    def metric(self, key: str) -> _Metric:
        return self._metrics[key]

    def any_contract(self, keys: Iterable[str]) -> bool:
        return any(self._metrics[key].has_contracts for key in keys)

    def forget(self) -> None:
        """Drop everything (tests that recreate the catalog in a fresh database)."""
        with self._lock:
            self._metrics.clear()


BOOK = ContractBook()
