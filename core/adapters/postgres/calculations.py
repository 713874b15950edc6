"""Stored calculations (immutable rows) and the counted events behind a line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from core.adapters.postgres.tables import calculations
from core.adapters.postgres.usage import version_rows, window_of
from core.domain.meters import MeterVersion


def get(connection: Connection, calculation_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(calculations.c.body).where(calculations.c.id == calculation_id)
    ).first()
    return None if row is None else dict(row.body)


def fingerprint_of(connection: Connection, calculation_id: str) -> str | None:
    """The inputs fingerprint taken before the calculation was first priced (None for a
    calculation stored before fingerprints, or unknown)."""
    return connection.execute(
        select(calculations.c.inputs_fingerprint).where(calculations.c.id == calculation_id)
    ).scalar_one_or_none()


def insert_once(connection: Connection, values: dict[str, Any]) -> bool:
    """Store a calculation unless one with its id exists (same inputs: same result)."""
    result = connection.execute(
        insert(calculations).values(values).on_conflict_do_nothing(index_elements=["id"])
    )
    return bool(result.rowcount)


def counted_events(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    versions: Sequence[MeterVersion],
    start: datetime,
    end: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
    received_by: datetime | None = None,
) -> list[dict[str, Any]]:
    """The events the meter versions count in [start, end), each with its version, in
    (timestamp, idempotency key in byte order) order, after the cursor; with
    `received_by`, only those received by then (what a calculation priced then saw)."""
    params: dict[str, Any] = {"customer": customer_id, "metric": metric_key, "limit": limit}
    received = []
    if received_by is not None:
        params["received_by"] = received_by
        received = ["received_at <= %(received_by)s"]
    selects = []
    for version in versions:
        window = window_of(version, start, end)
        if window is None:
            continue
        source, _, _ = version_rows(
            version,
            params,
            f"v{version.version}",
            where=["customer_id = %(customer)s", "metric_key = %(metric)s", *received],
            window=window,
        )
        selects.append(
            f"SELECT id, idempotency_key, timestamp, value, properties, {version.version} AS meter_version {source}"
        )
    if not selects:
        return []
    cursor = ""
    if after is not None:
        params["after_ts"], params["after_key"] = after
        cursor = 'WHERE (timestamp, idempotency_key COLLATE "C") > (%(after_ts)s, %(after_key)s COLLATE "C")'
    statement = (
        f"SELECT * FROM ({' UNION ALL '.join(selects)}) AS counted {cursor} "
        'ORDER BY timestamp, idempotency_key COLLATE "C" LIMIT %(limit)s'
    )
    rows = connection.exec_driver_sql(statement, params)
    columns = list(rows.keys())
    return [dict(zip(columns, row, strict=True)) for row in rows]


def created_at(connection: Connection, calculation_id: str) -> datetime | None:
    """When the calculation was priced: what corrections superseded then is what it billed."""
    found: datetime | None = connection.execute(
        select(calculations.c.created_at).where(calculations.c.id == calculation_id)
    ).scalar_one_or_none()
    return found
