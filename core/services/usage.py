"""Usage summaries and their parity.

- `realtime` (the default): hourly rollups for the whole hours of the window plus a raw
  scan of the partial hours at its edges; eventual, with `as_of` = the fold watermark.
- `exact`: one scan of the raw events with the meter definitions, carrying the checksum
  of exactly the events counted.
- parity: both, in one snapshot, per metric; `drift` only when nothing in the window was
  left to fold (otherwise the difference is `catching_up`, and says how many events).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres import corrections as correction_rows
from core.adapters.postgres import metrics as metric_rows
from core.adapters.postgres import rollups
from core.adapters.postgres import usage as usage_rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain.errors import FieldError, ValidationFailed
from core.domain.meters import SKETCH_RELATIVE_ERROR, MeterVersion
from core.domain.metrics import Aggregation, effective_to
from core.observability import (
    usage_parity_checked,
    usage_parity_drift,
    usage_parity_mismatches,
)
from core.services import completeness

WINDOW_DAYS_MAX = 400
# The aggregator's queue (core.services.aggregation runs it). A fold job's payload is
# {"events": n}, its events those stored with ingest_job_id = the job's id; a refold's is
# {"metric_key": k, "since": RFC 3339}.
AGGREGATE_QUEUE, FOLD_JOB, REFOLD_JOB = "aggregate", "fold", "refold"
MODES = ("realtime", "exact")

log = logging.getLogger(__name__)


def meter_versions(
    connection: Any, key: str, *, as_of: datetime | None = None
) -> list[MeterVersion]:
    """A metric's versions as meters, each ending where the next begins, with what
    corrections supersede among its events now (or as it stood at `as_of`: what an issued
    invoice billed)."""
    rows = metric_rows.versions(connection, [key])[key]
    starts = [row["effective_from"] for row in rows]
    superseded = correction_rows.supersession(connection, key, as_of=as_of)
    return [
        MeterVersion(
            version=row["version"],
            aggregation=Aggregation(row["aggregation"]),
            effective_from=row["effective_from"],
            effective_to=effective_to(starts, index),
            filters=dict(row["filters"]),
            group_by=tuple(row["group_by"]),
            unique_property=row["unique_property"],
            percentile=row["percentile"],
            superseded=superseded,
        )
        for index, row in enumerate(rows)
    ]


def _check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValidationFailed(
            "`to` must be after `from`", errors=[FieldError(("query", "to"), "not after from")]
        )
    if end - start > timedelta(days=WINDOW_DAYS_MAX):
        raise ValidationFailed(
            f"a summary covers at most {WINDOW_DAYS_MAX} days",
            errors=[FieldError(("query", "from"), "window too long")],
        )


def _known_versions(connection: Connection, metric_key: str) -> list[MeterVersion]:
    if metric_rows.get(connection, metric_key) is None:
        raise ValidationFailed(
            f"no metric {metric_key!r}",
            code="unknown_metric",
            errors=[FieldError(("query", "metric_key"), "unknown metric")],
        )
    return meter_versions(connection, metric_key)


def _render(
    *,
    customer_id: str,
    metric_key: str,
    start: datetime,
    end: datetime,
    versions: list[MeterVersion],
    result: usage_rows.ScanResult,
    mode: str,
    as_of: datetime,
) -> dict[str, Any]:
    by_version = {v.version: v for v in versions}
    split = len({g.version for g in result.groups}) > 1 or any(
        by_version[g.version].group_by for g in result.groups
    )
    return {
        "customer_id": customer_id,
        "metric_key": metric_key,
        "from": start,
        "to": end,
        "value": result.total,
        "event_count": result.event_count,
        "consistency": "exact" if mode == "exact" else "eventual",
        "as_of": as_of,
        "approximate": result.approximate,
        "meter_versions": sorted({g.version for g in result.groups}),
        "groups": [
            {
                "meter_version": g.version,
                "group": dict(zip(by_version[g.version].group_by, g.group, strict=True)),
                "value": g.value,
                "event_count": g.event_count,
            }
            for g in sorted(
                result.groups, key=lambda g: (g.version, tuple(x or "" for x in g.group))
            )
        ]
        if split
        else [],
        "checksum": "sha256:" + result.checksum if mode == "exact" else None,
    }


def _one(
    connection: Connection,
    mode: str,
    *,
    customer_id: str,
    metric_key: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
) -> dict[str, Any]:
    versions = _known_versions(connection, metric_key)
    compute = usage_rows.scan if mode == "exact" else usage_rows.realtime
    result = compute(
        connection,
        customer_id=customer_id,
        metric_key=metric_key,
        versions=versions,
        start=start,
        end=end,
    )
    rendered = _render(
        customer_id=customer_id,
        metric_key=metric_key,
        start=start,
        end=end,
        versions=versions,
        result=result,
        mode=mode,
        as_of=as_of,
    )
    rendered["excluded_events"] = usage_rows.excluded_count(
        connection,
        exact=mode == "exact",
        customer_id=customer_id,
        metric_key=metric_key,
        versions=versions,
        start=start,
        end=end,
    )
    # API.md §10: whether every region's events up to the window's end are here.
    rendered |= completeness.completeness(connection, end).view()
    rendered["regions"] = completeness.realtime_regions(connection)
    return rendered


def _as_of(connection: Connection, mode: str) -> datetime:
    if mode == "exact":
        return datetime.now(UTC)
    return rollups.watermark(connection, AGGREGATE_QUEUE, [FOLD_JOB, REFOLD_JOB])


def summary(
    *, mode: str, customer_id: str, metric_key: str, start: datetime, end: datetime
) -> dict[str, Any]:
    """One metric's usage of a customer in [start, end)."""
    _check_window(start, end)
    with get_database().transaction() as connection:
        as_of = _as_of(connection, mode)
        rendered = _one(
            connection,
            mode,
            customer_id=customer_id,
            metric_key=metric_key,
            start=start,
            end=end,
            as_of=as_of,
        )
    return rendered


def _metric_keys(
    connection: Connection, mode: str, *, customer_id: str, start: datetime, end: datetime
) -> list[str]:
    find = usage_rows.metric_keys if mode == "exact" else usage_rows.realtime_metric_keys
    return find(connection, customer_id=customer_id, start=start, end=end)


def summaries(
    *, mode: str, customer_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Every metric the customer has usage for in [start, end)."""
    _check_window(start, end)
    with get_database().transaction() as connection:
        as_of = _as_of(connection, mode)
        keys = _metric_keys(connection, mode, customer_id=customer_id, start=start, end=end)
        return [
            _one(
                connection,
                mode,
                customer_id=customer_id,
                metric_key=key,
                start=start,
                end=end,
                as_of=as_of,
            )
            for key in keys
        ]


def exact_summary(
    *, customer_id: str, metric_key: str, start: datetime, end: datetime
) -> dict[str, Any]:
    return summary(
        mode="exact", customer_id=customer_id, metric_key=metric_key, start=start, end=end
    )


@dataclass(frozen=True)
class MetricParity:
    metric_key: str
    realtime: dict[str, Any]
    exact: dict[str, Any]
    difference: Decimal | None
    pending_event_count: int
    refold_pending: bool
    status: str  # agree | catching_up | drift

    def view(self) -> dict[str, Any]:
        keep = ("value", "event_count", "approximate", "meter_versions", "groups")
        return {
            "metric_key": self.metric_key,
            "status": self.status,
            "realtime": {k: self.realtime[k] for k in keep},
            "exact": {k: self.exact[k] for k in (*keep, "checksum")},
            "difference": self.difference,
            "pending_event_count": self.pending_event_count,
            "refold_pending": self.refold_pending,
        }


def _within_bound(realtime: Decimal, exact: Decimal) -> bool:
    """A sketch percentile is within SKETCH_RELATIVE_ERROR of the exact value, plus the
    10^-10 of rounding to the stored scale."""
    return abs(realtime - exact) <= SKETCH_RELATIVE_ERROR * abs(exact) + Decimal("1e-10")


def _groups_agree(realtime: dict[str, Any], exact: dict[str, Any]) -> bool:
    def key(group: dict[str, Any]) -> tuple[Any, ...]:
        return (group["meter_version"], tuple(sorted(group["group"].items())))

    mine = {key(g): g for g in realtime["groups"]}
    theirs = {key(g): g for g in exact["groups"]}
    if mine.keys() != theirs.keys():
        return False
    return all(
        mine[k]["event_count"] == theirs[k]["event_count"]
        and (
            _within_bound(mine[k]["value"], theirs[k]["value"])
            if realtime["approximate"]
            else mine[k]["value"] == theirs[k]["value"]
        )
        for k in mine
    )


def _compare(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
    unfolded: list[int],
) -> MetricParity:
    realtime, exact = (
        _one(
            connection,
            mode,
            customer_id=customer_id,
            metric_key=metric_key,
            start=start,
            end=end,
            as_of=as_of,
        )
        for mode in MODES
    )
    difference = (
        realtime["value"] - exact["value"]
        if realtime["value"] is not None and exact["value"] is not None
        else None
    )
    pending = rollups.unfolded_events(
        connection,
        customer_id=customer_id,
        metric_key=metric_key,
        start=start,
        end=end,
        job_ids=unfolded,
    )
    refolding = rollups.refold_pending(connection, AGGREGATE_QUEUE, REFOLD_JOB, metric_key)
    values_agree = (
        realtime["value"] == exact["value"]
        if not realtime["approximate"] or difference is None
        else _within_bound(realtime["value"], exact["value"])
    )
    agree = (
        values_agree
        and realtime["event_count"] == exact["event_count"]
        and _groups_agree(realtime, exact)
    )
    status = "agree" if agree else ("catching_up" if pending or refolding else "drift")
    return MetricParity(metric_key, realtime, exact, difference, pending, refolding, status)


def _parity(
    connection: Connection, *, customer_id: str, start: datetime, end: datetime
) -> tuple[datetime, list[MetricParity]]:
    as_of = _as_of(connection, "realtime")
    unfolded = rollups.unfinished_jobs(connection, AGGREGATE_QUEUE, FOLD_JOB)
    keys = sorted(
        set(_metric_keys(connection, "exact", customer_id=customer_id, start=start, end=end))
        | set(_metric_keys(connection, "realtime", customer_id=customer_id, start=start, end=end))
    )
    return as_of, [
        _compare(
            connection,
            customer_id=customer_id,
            metric_key=key,
            start=start,
            end=end,
            as_of=as_of,
            unfolded=unfolded,
        )
        for key in keys
    ]


def parity(*, customer_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Real-time against exact for every metric of a customer in [start, end), read in
    one snapshot so that a fold committing meanwhile cannot fake a difference."""
    _check_window(start, end)
    with get_database().snapshot() as connection:
        as_of, found = _parity(connection, customer_id=customer_id, start=start, end=end)
    return {
        "customer_id": customer_id,
        "from": start,
        "to": end,
        "as_of": as_of,
        "caught_up": all(p.status != "catching_up" for p in found),
        "agree": all(p.status == "agree" for p in found),
        "data": [p.view() for p in found],
    }


@dataclass
class Reconciliation:
    start: datetime
    end: datetime
    as_of: datetime | None = None
    checked: bool = False
    customers: int = 0
    drift: dict[str, Decimal] | None = None


def reconcile(
    now: datetime | None = None,
    *,
    pick_customers: Callable[[Connection, datetime, datetime, int], list[str]] | None = None,
) -> Reconciliation:
    """On every aggregate tick: compare real-time and exact over the last whole hours
    for a sample of customers; export the drift per metric and log every difference.
    Skipped while the fold watermark has not passed the window's end."""
    config = settings()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=config.abaxus_parity_window_hours)
    outcome = Reconciliation(start, end)
    if config.abaxus_parity_sample_customers == 0:
        return outcome
    choose = pick_customers or (
        lambda connection, a, b, n: rollups.sample_customers(connection, start=a, end=b, limit=n)
    )
    drift: dict[str, Decimal] = {}
    mismatches: dict[str, int] = {}
    with get_database().snapshot() as connection:
        outcome.as_of = _as_of(connection, "realtime")
        if outcome.as_of < end:
            log.info(
                "parity check skipped: folding has not passed the window",
                extra={"as_of": outcome.as_of.isoformat(), "window_end": end.isoformat()},
            )
            return outcome
        customers = choose(connection, start, end, config.abaxus_parity_sample_customers)
        for customer_id in customers:
            _, found = _parity(connection, customer_id=customer_id, start=start, end=end)
            for item in found:
                drift.setdefault(item.metric_key, Decimal(0))
                mismatches.setdefault(item.metric_key, 0)
                if item.status != "drift":
                    continue
                gap = abs(item.difference) if item.difference is not None else Decimal(0)
                drift[item.metric_key] += gap
                mismatches[item.metric_key] += 1
                log.error(
                    "usage parity drift: real-time and exact disagree",
                    extra={
                        "customer_id": customer_id,
                        "metric_key": item.metric_key,
                        "from": start.isoformat(),
                        "to": end.isoformat(),
                        "realtime": str(item.realtime["value"]),
                        "exact": str(item.exact["value"]),
                        "realtime_events": item.realtime["event_count"],
                        "exact_events": item.exact["event_count"],
                    },
                )
    for metric_key, gap in drift.items():
        # Prometheus gauges are floats: an exported reading, never a money path.
        usage_parity_drift.labels(metric_key).set(float(gap))
        usage_parity_mismatches.labels(metric_key).set(mismatches[metric_key])
    usage_parity_checked.set_to_current_time()
    outcome.checked, outcome.customers, outcome.drift = True, len(customers), drift
    return outcome
