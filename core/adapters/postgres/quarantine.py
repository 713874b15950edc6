"""Quarantined event rows: events kept, uncounted, because they broke a contract."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select, update

from core.adapters.postgres.database import driver_rows
from core.adapters.postgres.events import EVENT_COLUMNS
from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import quarantined_events
from core.adapters.queue import CountedJob


def page(
    connection: Connection,
    *,
    metric_key: str | None,
    customer_id: str | None,
    released: bool,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    table = quarantined_events
    query = select(table).where(
        table.c.released_at.is_not(None) if released else table.c.released_at.is_(None)
    )
    if metric_key is not None:
        query = query.where(table.c.metric_key == metric_key)
    if customer_id is not None:
        query = query.where(table.c.customer_id == customer_id)
    return keyset_page(connection, query, table.c.id, after=after, limit=limit)


def held(
    connection: Connection, metric_key: str, ids: Sequence[str] | None, *, limit: int
) -> list[dict[str, Any]]:
    """Held events of the metric (those of `ids`, or the first `limit` by id), locked for
    the transaction: a concurrent release of the same events waits, then skips them."""
    table = quarantined_events
    query = (
        select(table)
        .where(table.c.metric_key == metric_key, table.c.released_at.is_(None))
        .order_by(table.c.id)
        .limit(limit)
        .with_for_update()
    )
    if ids is not None:
        query = query.where(table.c.id.in_(list(ids)))
    return [as_dict(row) for row in connection.execute(query).all()]


def count_held(connection: Connection, metric_key: str) -> int:
    return int(
        connection.exec_driver_sql(
            "SELECT count(*) FROM quarantined_events "
            "WHERE metric_key = %(metric)s AND released_at IS NULL",
            {"metric": metric_key},
        ).scalar_one()
    )


def recheck(
    connection: Connection, updates: Sequence[tuple[str, int, list[dict[str, str]]]]
) -> None:
    """Record the violations each still-held event has now, and the version checked."""
    for event_id, version, violations in updates:
        connection.execute(
            update(quarantined_events)
            .where(quarantined_events.c.id == event_id)
            .values(metric_version=version, violations=violations, checked_at=func.now())
        )


_RELEASE_SQL = (
    "WITH released AS (UPDATE quarantined_events SET released_at = now(), "  # noqa: S608 - constant SQL
    "released_by = %(by)s, checked_at = now(), metric_version = (%(versions)s::jsonb ->> id)::integer "
    "WHERE id = ANY(%(ids)s::text[]) AND released_at IS NULL RETURNING *), "
    "job AS ({job}), "
    f"moved AS (INSERT INTO events ({EVENT_COLUMNS}, region, ingest_job_id) "
    "SELECT id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
    "content_sha256, digest, region, (SELECT id FROM job) FROM released RETURNING 1) "
    "SELECT (SELECT id FROM job), (SELECT count(*) FROM moved)"
)


def release(
    connection: Connection,
    ids: Sequence[str],
    versions: dict[str, int],
    job: CountedJob,
    *,
    by: str,
) -> tuple[int | None, int]:
    """Move held events into `events` under their ids (their keys already name them) and
    hand them to aggregation with `job`, in one statement; (job id, events moved)."""
    ((job_id, moved),) = driver_rows(
        connection,
        _RELEASE_SQL.replace("{job}", job.sql("released")),
        {"ids": list(ids), "versions": json.dumps(versions), "by": by, **job.params()},
    )
    return (None if job_id is None else int(job_id)), int(moved)


def held_counts(connection: Connection) -> dict[str, int]:
    """Held events per metric (the console's metrics list)."""
    rows = connection.exec_driver_sql(
        "SELECT metric_key, count(*) FROM quarantined_events WHERE released_at IS NULL GROUP BY 1"
    )
    return {str(key): int(count) for key, count in rows}
