"""Event rows: the ingestion hot path in a handful of set-based statements per batch."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from core.domain.canonical import canonical_json
from core.domain.events import UsageEvent

_known_partitions: set[datetime] = set()
_partitions_lock = threading.Lock()


def ensure_partitions(engine: Engine, months: set[datetime]) -> None:
    """Create missing monthly partitions, each in its own short transaction (never inside
    a request's transaction: creating a partition briefly locks the parent table)."""
    missing = months - _known_partitions
    if not missing:
        return
    with _partitions_lock:
        for month in sorted(missing - _known_partitions):
            with engine.begin() as connection:
                connection.execute(
                    text("SELECT abaxus_ensure_event_partition(:month)"), {"month": month.date()}
                )
            _known_partitions.add(month)


def forget_partitions() -> None:
    """Tests that drop databases call this; the cache is otherwise valid for the process."""
    _known_partitions.clear()


def partitions(connection: Connection) -> list[str]:
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass ORDER BY 1"
        )
    )
    return [str(name) for name in rows.scalars()]


def active_metrics(connection: Connection, keys: set[str]) -> set[str]:
    rows = connection.exec_driver_sql(
        "SELECT key FROM metrics WHERE key = ANY(%(keys)s) AND archived_at IS NULL",
        {"keys": sorted(keys)},
    )
    return {str(key) for (key,) in rows}


def claim_keys(
    connection: Connection, events: Sequence[UsageEvent], ids: Sequence[str]
) -> set[str]:
    """Insert the idempotency keys that are new; returns them. Keys are inserted in sorted
    order so that concurrent batches sharing keys wait on each other instead of deadlocking."""
    rows = connection.exec_driver_sql(
        "INSERT INTO event_keys (idempotency_key, content_sha256, event_id, event_timestamp) "
        "SELECT * FROM unnest(%(keys)s::text[], %(shas)s::text[], %(ids)s::text[], %(stamps)s::timestamptz[]) "
        "ORDER BY 1 ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key",
        {
            "keys": [e.idempotency_key for e in events],
            "shas": [e.content_sha256 for e in events],
            "ids": list(ids),
            "stamps": [e.timestamp for e in events],
        },
    )
    return {str(key) for (key,) in rows}


def stored_keys(connection: Connection, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """idempotency key -> (content sha256, event id) of events stored earlier."""
    rows = connection.exec_driver_sql(
        "SELECT idempotency_key, content_sha256, event_id FROM event_keys WHERE idempotency_key = ANY(%(keys)s)",
        {"keys": list(keys)},
    )
    return {str(key): (str(sha), str(event_id)) for key, sha, event_id in rows}


def insert_events(
    connection: Connection,
    events: Sequence[UsageEvent],
    ids: Sequence[str],
    *,
    job_id: int,
    region: str,
) -> None:
    connection.exec_driver_sql(
        "INSERT INTO events (id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
        "content_sha256, region, ingest_job_id) "
        "SELECT id, customer_id, metric_key, value, ts, props::jsonb, key, sha, %(region)s, %(job)s "
        "FROM unnest(%(ids)s::text[], %(customers)s::text[], %(metrics)s::text[], %(values)s::numeric[], "
        "%(stamps)s::timestamptz[], %(props)s::text[], %(keys)s::text[], %(shas)s::text[]) "
        "AS e(id, customer_id, metric_key, value, ts, props, key, sha)",
        {
            "region": region,
            "job": job_id,
            "ids": list(ids),
            "customers": [e.customer_id for e in events],
            "metrics": [e.metric_key for e in events],
            "values": [e.value for e in events],
            "stamps": [e.timestamp for e in events],
            "props": [canonical_json(e.properties).decode("utf-8") for e in events],
            "keys": [e.idempotency_key for e in events],
            "shas": [e.content_sha256 for e in events],
        },
    )


def page(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str | None,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Events in (timestamp, id) order, the order GET /v1/events pages in."""
    clauses = ["customer_id = %(customer)s"]
    params: dict[str, Any] = {"customer": customer_id, "limit": limit}
    if metric_key is not None:
        clauses.append("metric_key = %(metric)s")
        params["metric"] = metric_key
    if start is not None:
        clauses.append("timestamp >= %(start)s")
        params["start"] = start
    if end is not None:
        clauses.append("timestamp < %(end)s")
        params["end"] = end
    if after is not None:
        clauses.append("(timestamp, id) > (%(after_ts)s, %(after_id)s)")
        params["after_ts"], params["after_id"] = after
    where = " AND ".join(clauses)  # fixed clauses above; every value is a bound parameter
    query = f"SELECT id, customer_id, metric_key, value, timestamp, properties, idempotency_key, received_at, region FROM events WHERE {where} ORDER BY timestamp, id LIMIT %(limit)s"  # noqa: S608
    rows = connection.exec_driver_sql(query, params)
    columns = list(rows.keys())
    return [dict(zip(columns, row, strict=True)) for row in rows]
