"""Correction rows: the corrections, the events staged in them, the keys an amend retracts,
and what supersedes which events now (or as of an instant)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from core.adapters.postgres.database import driver_rows
from core.adapters.postgres.events import EVENT_COLUMNS
from core.adapters.postgres.rows import as_dict
from core.adapters.postgres.tables import correction_events, correction_retractions, corrections
from core.domain.corrections import CORRECTION_ID, ReplacedRange, Supersession


def insert_correction(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    return as_dict(
        connection.execute(insert(corrections).values(values).returning(*corrections.c)).one()
    )


def get(connection: Connection, correction_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(corrections).where(corrections.c.id == correction_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).one_or_none()
    return None if row is None else as_dict(row)


def change(connection: Connection, correction_id: str, values: dict[str, Any]) -> dict[str, Any]:
    return as_dict(
        connection.execute(
            update(corrections)
            .where(corrections.c.id == correction_id)
            .values(values)
            .returning(*corrections.c)
        ).one()
    )


def page(
    connection: Connection,
    *,
    metric_key: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = select(corrections).order_by(corrections.c.id).limit(limit)
    if metric_key is not None:
        query = query.where(corrections.c.metric_key == metric_key)
    if status is not None:
        query = query.where(corrections.c.status == status)
    if after is not None:
        query = query.where(corrections.c.id > after)
    return [as_dict(row) for row in connection.execute(query).all()]


def counts(connection: Connection, correction_id: str) -> tuple[int, int]:
    """(events staged, keys retracted)."""
    staged = connection.exec_driver_sql(
        "SELECT (SELECT count(*) FROM correction_events WHERE correction_id = %(c)s), "
        "(SELECT count(*) FROM correction_retractions WHERE correction_id = %(c)s)",
        {"c": correction_id},
    ).one()
    return int(staged[0]), int(staged[1])


_STAGE_SQL = (
    "WITH input AS (SELECT r->>0 AS id, r->>1 AS customer_id, r->>2 AS metric_key, "
    "(r->>3)::numeric(20, 10) AS value, (r->>4)::timestamptz AS timestamp, "
    "r->5 AS properties, r->>6 AS idempotency_key, r->>7 AS content_sha256, "
    "(r->>8)::numeric(78, 0) AS digest FROM jsonb_array_elements(%(events)s::jsonb) AS r), "
    "claimed AS (INSERT INTO event_keys (idempotency_key, content_sha256, event_id, "
    "event_timestamp) SELECT idempotency_key, content_sha256, id, timestamp FROM input "
    "ORDER BY idempotency_key ON CONFLICT (idempotency_key) DO NOTHING "
    "RETURNING idempotency_key, event_id), "
    "staged AS (INSERT INTO correction_events (id, correction_id, customer_id, metric_key, "
    "value, timestamp, properties, idempotency_key, content_sha256, digest) "
    "SELECT s.id, %(correction)s, s.customer_id, s.metric_key, s.value, s.timestamp, "
    "s.properties, s.idempotency_key, s.content_sha256, s.digest FROM input s "
    "WHERE s.id IN (SELECT event_id FROM claimed) RETURNING 1) "
    "SELECT ARRAY(SELECT idempotency_key FROM claimed), (SELECT count(*) FROM staged)"
)


def stage(connection: Connection, correction_id: str, events_json: str) -> set[str]:
    """Claim the events' keys (unique forever, as any event's) and stage the new ones in
    the correction; the keys claimed."""
    ((keys, staged),) = driver_rows(
        connection, _STAGE_SQL, {"events": events_json, "correction": correction_id}
    )
    if int(staged) != len(keys):
        raise RuntimeError(f"staged {staged} events, claimed {len(keys)} keys")
    return {str(key) for key in keys}


def stored_events(connection: Connection, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Events stored under these keys (for a retraction): key -> event."""
    rows = connection.exec_driver_sql(
        "SELECT e.idempotency_key, e.id, e.customer_id, e.metric_key, e.timestamp "
        "FROM event_keys k JOIN events e ON e.id = k.event_id "
        "AND e.timestamp = k.event_timestamp WHERE k.idempotency_key = ANY(%(keys)s)",
        {"keys": list(keys)},
    )
    return {
        str(key): {"id": i, "customer_id": c, "metric_key": m, "timestamp": t}
        for key, i, c, m, t in rows
    }


def retract(connection: Connection, correction_id: str, found: dict[str, dict[str, Any]]) -> None:
    if not found:
        return
    connection.execute(
        insert(correction_retractions)
        .values(
            [
                {"correction_id": correction_id, "idempotency_key": key, "event_id": event["id"]}
                for key, event in sorted(found.items())
            ]
        )
        .prefix_with("")
    )


def retracted_keys(connection: Connection, correction_id: str) -> set[str]:
    rows = connection.execute(
        select(correction_retractions.c.idempotency_key).where(
            correction_retractions.c.correction_id == correction_id
        )
    )
    return {str(key) for (key,) in rows}


_MOVE_SQL = (
    "WITH moved AS (INSERT INTO events ("  # noqa: S608 - constant SQL
    f"{EVENT_COLUMNS}, region, ingest_job_id, correction_id, received_at) "
    "SELECT id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
    "content_sha256, digest, %(region)s, %(job)s, correction_id, %(received_at)s "
    "FROM correction_events WHERE correction_id = %(correction)s RETURNING 1) "
    "SELECT count(*) FROM moved"
)


def move_into_events(
    connection: Connection, correction_id: str, *, region: str, job: int, received_at: datetime
) -> int:
    """The staged events become events received at the apply, marked with their correction."""
    ((moved,),) = driver_rows(
        connection,
        _MOVE_SQL,
        {"correction": correction_id, "region": region, "job": job, "received_at": received_at},
    )
    return int(moved)


@contextmanager
def events_with_staged(connection: Connection, correction_id: str) -> Iterator[None]:
    """Within the block, `events` reads as the table plus the correction's staged events,
    received now: a temporary view in pg_temp, which comes first on the search path (the
    caller's savepoint rollback drops it). Statements are not prepared meanwhile: a plan
    prepared earlier on this connection names the table itself, not the view."""
    if not CORRECTION_ID.fullmatch(correction_id):
        raise ValueError(f"not a correction id: {correction_id!r}")
    driver = connection.connection.driver_connection
    threshold = driver.prepare_threshold  # type: ignore[union-attr]
    driver.prepare_threshold = None  # type: ignore[union-attr]
    try:
        _create_staged_view(connection, correction_id)
        yield
    finally:
        driver.prepare_threshold = threshold  # type: ignore[union-attr]


def _create_staged_view(connection: Connection, correction_id: str) -> None:
    connection.exec_driver_sql(
        "CREATE TEMPORARY VIEW events AS "  # noqa: S608 - a checked id, no client text
        f"SELECT {EVENT_COLUMNS}, received_at, region, ingest_job_id, correction_id "
        "FROM public.events UNION ALL "
        f"SELECT {EVENT_COLUMNS}, now(), 'preview', 0::bigint, correction_id "
        f"FROM public.correction_events WHERE correction_id = '{correction_id}'"
    )


def record_job(connection: Connection, correction_id: str) -> int:
    """The ingestion job that names the correction's events: done at once (the apply folds
    them itself, in its own transaction)."""
    return int(
        connection.exec_driver_sql(
            "INSERT INTO jobs (queue, kind, payload, status, max_attempts) VALUES "
            "('aggregate', 'correction', jsonb_build_object('correction_id', %(c)s::text), "
            "'done', 1) RETURNING id",
            {"c": correction_id},
        ).scalar_one()
    )


def staged_window(connection: Connection, correction_id: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(correction_events).where(correction_events.c.correction_id == correction_id)
    )
    return [as_dict(row) for row in rows]


def supersession(
    connection: Connection, metric_key: str, *, as_of: datetime | None = None
) -> Supersession:
    """What supersedes events of `metric_key` now (as_of None) or as it stood at `as_of`:
    applied replace ranges, keys retracted by applied amends, and the corrections whose
    events stopped counting (reverted)."""
    if as_of is None:
        applied = "status = 'applied'"
        reverted = "status = 'reverted'"
        params: dict[str, Any] = {"metric": metric_key}
    else:
        applied = (
            "applied_at IS NOT NULL AND applied_at <= %(as_of)s "
            "AND (reverted_at IS NULL OR reverted_at > %(as_of)s)"
        )
        # Reverted by then, or applied only later: their events did not count then.
        reverted = (
            "(reverted_at IS NOT NULL AND reverted_at <= %(as_of)s) OR applied_at > %(as_of)s"
        )
        params = {"metric": metric_key, "as_of": as_of}
    rows = connection.exec_driver_sql(
        "SELECT id, mode, customer_id, window_start, window_end, applied_at, "  # noqa: S608 - fixed clauses
        f"({applied}) AS in_force, ({reverted}) AS withdrawn FROM corrections "
        "WHERE metric_key = %(metric)s AND status <> 'open' ORDER BY applied_at, id",
        params,
    ).all()
    duplicates = connection.exec_driver_sql(
        "SELECT EXISTS (SELECT 1 FROM region_duplicates WHERE metric_key = %(metric)s "
        "AND (%(as_of)s::timestamptz IS NULL OR recorded_at <= %(as_of)s::timestamptz))",
        {"metric": metric_key, "as_of": as_of},
    ).scalar_one()
    if not rows:
        return Supersession(region_duplicates=bool(duplicates), duplicates_as_of=as_of)
    ranges = tuple(
        ReplacedRange(
            correction_id=str(row.id),
            customer_id=row.customer_id,
            start=row.window_start,
            end=row.window_end,
            received_before=row.applied_at,
        )
        for row in rows
        if row.in_force and row.mode == "replace"
    )
    amends = [str(row.id) for row in rows if row.in_force and row.mode == "amend"]
    keys: dict[str, str] = {}
    if amends:
        for key, correction_id in connection.exec_driver_sql(
            "SELECT idempotency_key, correction_id FROM correction_retractions "
            "WHERE correction_id = ANY(%(ids)s)",
            {"ids": amends},
        ):
            keys.setdefault(str(key), str(correction_id))
    return Supersession(
        replaced=ranges,
        retracted=tuple(sorted(keys.items())),
        withdrawn=tuple(sorted(str(row.id) for row in rows if row.withdrawn)),
        region_duplicates=bool(duplicates),
        duplicates_as_of=as_of,
    )


def states(connection: Connection, metric_keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """(correction id, status) of every applied or reverted correction per metric: what a
    draft's inputs fingerprint covers of corrections."""
    found: dict[str, list[tuple[str, str]]] = {key: [] for key in metric_keys}
    for key, correction_id, status in connection.exec_driver_sql(
        "SELECT metric_key, id, status FROM corrections "
        "WHERE metric_key = ANY(%(keys)s) AND status <> 'open' ORDER BY 1, 2",
        {"keys": list(metric_keys)},
    ):
        found[str(key)].append((str(correction_id), str(status)))
    for key, count in connection.exec_driver_sql(
        "SELECT metric_key, count(*) FROM region_duplicates WHERE metric_key = ANY(%(keys)s) "
        "GROUP BY 1 ORDER BY 1",
        {"keys": list(metric_keys)},
    ):  # a copy found to be a cross-region duplicate changes what the metric counts
        found[str(key)].append(("region_duplicates", str(count)))
    return found


def corrected_metrics(connection: Connection, metric_key: str | None) -> list[str]:
    """Metrics (or the one named) with an applied or reverted correction."""
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT metric_key FROM corrections WHERE status <> 'open' "
        "AND (%(m)s::text IS NULL OR metric_key = %(m)s) ORDER BY 1",
        {"m": metric_key},
    )
    return [str(key) for (key,) in rows]


def customers_in_window(connection: Connection, row: dict[str, Any]) -> list[str]:
    """Customers with events of the correction's metric in its window, or staged in it."""
    found = connection.exec_driver_sql(
        "SELECT DISTINCT customer_id FROM events WHERE metric_key = %(m)s "
        "AND timestamp >= %(s)s AND timestamp < %(e)s "
        "UNION SELECT customer_id FROM correction_events WHERE correction_id = %(c)s ORDER BY 1",
        {"m": row["metric_key"], "s": row["window_start"], "e": row["window_end"], "c": row["id"]},
    )
    return [str(customer) for (customer,) in found]


_SUBSCRIPTIONS_SQL = (
    "SELECT s.id, s.customer_id, s.starts_at, s.anchor_at, s.ends_at, p.interval FROM subscriptions s "
    "JOIN plan_versions p ON p.plan_code = s.plan_code AND p.version = s.plan_version "
    "WHERE s.customer_id = ANY(%(c)s) ORDER BY s.id"
)


def subscriptions_of(
    connection: Connection, customers: Sequence[str], *, lock: bool
) -> list[dict[str, Any]]:
    statement = _SUBSCRIPTIONS_SQL + (" FOR NO KEY UPDATE OF s" if lock else "")
    found = connection.exec_driver_sql(statement, {"c": list(customers)})
    return [dict(r._mapping) for r in found]
