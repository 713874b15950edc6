"""Event rows: the ingestion hot path, one set-based statement per batch or group."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, text

from core.adapters.postgres.database import driver_rows
from core.adapters.postgres.usage import superseded_clauses
from core.adapters.queue import CountedJob
from core.domain.corrections import Supersession
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


EVENT_COLUMNS = (
    "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, content_sha256, "
    "digest"
)


class Stored(NamedTuple):
    """What one store statement did: which of the events' metrics are active (an event of
    any other metric was not stored) with the stamp of their latest version, whether the
    stamps were the ones the events were checked against (`fresh`: when not, nothing was
    stored), the idempotency keys it claimed (their events are stored now), the hand-off
    job's id (None when nothing was counted), the events moved into `events` and those
    held in quarantine."""

    active: dict[str, str]
    fresh: bool
    claimed: set[str]
    job_id: int | None
    moved: int
    held: int


class Quarantined(NamedTuple):
    """An event to hold in quarantine instead of counting it: its id, the metric version
    whose contract it broke, the violations (JSON) and who produced it."""

    event_id: str
    version: int
    violations_json: str
    producer: str | None


# The events arrive as one JSON parameter of the statement that stores them: an array per
# event in EVENT_COLUMNS order, every scalar as its canonical text (exact: a value or a
# digest never passes through a JSON number). One round trip, no staging table to fill
# and empty at commit. Measured against the COPY into a temp table it replaced
# (docs/benchmarks.md): one event 0.18 ms of Python and 0.29 ms of PostgreSQL CPU instead
# of 0.43 and 0.66; 500 events 1.7 and 6.5 ms instead of 2.1 and 7.3.
#
# Contracts (core/services/contracts.py): the events were checked against the versions whose
# stamps are in %(stamps)s; if a metric has another latest version now, the statement stores
# nothing (`fresh` false) and the caller checks again. Events in %(quarantine)s are held in
# quarantined_events, their keys claimed like any other, and are not counted.
VERSION_STAMP_SQL = (
    "(SELECT v.version || ':' || (extract(epoch FROM v.created_at) * 1000000)::bigint "
    "FROM metric_versions v WHERE v.metric_key = m.key ORDER BY v.version DESC LIMIT 1)"
)
_STORE_SQL = (
    f"WITH active AS (SELECT m.key, {VERSION_STAMP_SQL} AS stamp FROM metrics m "  # noqa: S608 - constant SQL: the job statement is this module's
    "WHERE m.key = ANY(%(metric_keys)s::text[]) AND m.archived_at IS NULL), "
    "fresh AS (SELECT NOT EXISTS (SELECT 1 FROM active a "
    "WHERE a.stamp IS DISTINCT FROM %(stamps)s::jsonb ->> a.key) AS ok), "
    "quarantine AS (SELECT q->>0 AS id, (q->>1)::integer AS version, q->2 AS violations, "
    "q->>3 AS producer FROM jsonb_array_elements(%(quarantine)s::jsonb) AS q), "
    "input AS (SELECT r->>0 AS id, r->>1 AS customer_id, r->>2 AS metric_key, "
    "(r->>3)::numeric(20, 10) AS value, (r->>4)::timestamptz AS timestamp, "
    "r->5 AS properties, r->>6 AS idempotency_key, r->>7 AS content_sha256, "
    "(r->>8)::numeric(78, 0) AS digest, r->>9 AS zone FROM jsonb_array_elements(%(events)s::jsonb) AS r), "
    "claimed AS (INSERT INTO event_keys (idempotency_key, content_sha256, event_id, "
    "event_timestamp) SELECT idempotency_key, content_sha256, id, timestamp FROM input "
    "WHERE metric_key IN (SELECT key FROM active) AND (SELECT ok FROM fresh) "
    "ORDER BY idempotency_key "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, event_id), "
    "counted AS (SELECT event_id FROM claimed WHERE event_id NOT IN (SELECT id FROM quarantine)), "
    "job AS ({job}), "  # CountedJob.sql: filled in by _store_sql
    f"moved AS (INSERT INTO events ({EVENT_COLUMNS}, region, ingest_job_id, zone) "
    "SELECT s.id, s.customer_id, s.metric_key, s.value, s.timestamp, s.properties, "
    "s.idempotency_key, s.content_sha256, s.digest, %(region)s, (SELECT id FROM job), s.zone "
    "FROM input s WHERE s.id IN (SELECT event_id FROM counted) RETURNING 1), "
    "held AS (INSERT INTO quarantined_events (id, customer_id, metric_key, value, timestamp, "
    "properties, idempotency_key, content_sha256, digest, region, producer, metric_version, "
    "violations) SELECT s.id, s.customer_id, s.metric_key, s.value, s.timestamp, s.properties, "
    "s.idempotency_key, s.content_sha256, s.digest, %(region)s, q.producer, q.version, "
    "q.violations FROM input s JOIN quarantine q ON q.id = s.id "
    "WHERE s.id IN (SELECT event_id FROM claimed) RETURNING 1) "
    "SELECT (SELECT coalesce(jsonb_object_agg(key, stamp), '{}'::jsonb) FROM active), "
    "(SELECT ok FROM fresh), ARRAY(SELECT idempotency_key FROM claimed), "
    "(SELECT id FROM job), (SELECT count(*) FROM moved), (SELECT count(*) FROM held)"
)


# Without events to hold (nearly every batch), the statement has no quarantine part: the
# claimed keys are the counted ones.
_LEAN_STORE_SQL = (
    _STORE_SQL.replace(
        "quarantine AS (SELECT q->>0 AS id, (q->>1)::integer AS version, q->2 AS violations, "
        "q->>3 AS producer FROM jsonb_array_elements(%(quarantine)s::jsonb) AS q), ",
        "",
    )
    .replace(
        "counted AS (SELECT event_id FROM claimed WHERE event_id NOT IN (SELECT id FROM quarantine)), ",
        "",
    )
    .replace("(SELECT event_id FROM counted)", "(SELECT event_id FROM claimed)")
    .replace(
        _STORE_SQL[_STORE_SQL.index("held AS (") : _STORE_SQL.index("SELECT (SELECT coalesce")], ""
    )
    .replace("(SELECT count(*) FROM held)", "0")
    .replace("RETURNING 1), SELECT", "RETURNING 1) SELECT")
)


@functools.cache
def _store_sql(job: CountedJob, *, holding: bool) -> str:
    if holding:
        return _STORE_SQL.replace("{job}", job.sql("counted"))
    return _LEAN_STORE_SQL.replace("{job}", job.sql("claimed"))


def events_json(
    events: Sequence[UsageEvent], ids: Sequence[str], zones: Mapping[str, str] | None = None
) -> str:
    """The events as the store statement's JSON parameter: client texts as JSON strings,
    canonical texts (value, instant, hashes, digest) as they are, the stored properties
    as their canonical JSON (parse_event refused NUL and lone surrogates), and the
    residency zone of the event's customer (`zones`: customer -> zone) or null."""
    zones = zones or {}
    rows = ",".join(
        f'["{event_id}",{encode_basestring(e.customer_id)},{encode_basestring(e.metric_key)},'
        f'"{e.value_text}","{e.instant}",{e.properties_json},'
        f'{encode_basestring(e.idempotency_key)},"{e.content_sha256}","{e.digest}",'
        f"{_zone_json(zones.get(e.customer_id))}]"
        for e, event_id in zip(events, ids, strict=True)
    )
    return f"[{rows}]"


def _zone_json(zone: str | None) -> str:
    return "null" if zone is None else encode_basestring(zone)


def store(
    connection: Connection,
    events: Sequence[UsageEvent],
    ids: Sequence[str],
    job: CountedJob,
    *,
    region: str,
    stamps: dict[str, str],
    quarantine: Sequence[Quarantined] = (),
    zones: Mapping[str, str] | None = None,
) -> Stored:
    """In one statement: the active metrics among the events', the new idempotency keys of
    the events of those metrics claimed, their events moved into `events`, and `job`
    enqueued counting them to hand them to aggregation.

    Keys are claimed in key order, so that concurrent writers sharing keys wait on each
    other instead of deadlocking; a key being inserted by another transaction waits for
    it and then counts as not new. Only the input and the claimed keys are read: a join
    with event_keys would be planned against an input without statistics and scan
    event_keys, whose size only grows."""
    held = ",".join(
        f'["{q.event_id}",{q.version},{q.violations_json},'
        f"{'null' if q.producer is None else encode_basestring(q.producer)}]"
        for q in quarantine
    )
    params = {
        # Every metric checked, not only those of the events stored: an event refused
        # under a stale contract must be checked again too.
        "metric_keys": sorted(stamps.keys() | {e.metric_key for e in events}),
        "stamps": json.dumps(stamps),
    }
    if quarantine:
        params["quarantine"] = f"[{held}]"
    ((active, fresh, keys, job_id, moved, held_count),) = driver_rows(
        connection,
        _store_sql(job, holding=bool(quarantine)),
        {
            **params,
            "events": events_json(events, ids, zones),
            "region": region,
            **job.params(),
        },
    )
    return Stored(
        {str(key): str(stamp) for key, stamp in active.items()},
        bool(fresh),
        {str(key) for key in keys},
        None if job_id is None else int(job_id),
        int(moved),
        int(held_count),
    )


def customer_regions(connection: Connection, customer_ids: Sequence[str]) -> dict[str, str]:
    """The home region of each of these customers that has one: from the catalog, or from
    the directory of customer homes (customers of another zone, without their data)."""
    rows = connection.exec_driver_sql(
        "SELECT id, region FROM customers WHERE id = ANY(%(ids)s) AND region IS NOT NULL "
        "UNION ALL SELECT customer_id, region FROM customer_homes "
        "WHERE customer_id = ANY(%(ids)s) AND customer_id NOT IN "
        "(SELECT id FROM customers WHERE id = ANY(%(ids)s))",
        {"ids": list(customer_ids)},
    )
    return {str(customer): str(region) for customer, region in rows}


def stored_keys(connection: Connection, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """idempotency key -> (content sha256, event id) of events stored earlier. A statement
    of its own: in READ COMMITTED it sees keys that a concurrent batch committed meanwhile."""
    if not keys:  # every key was new: the usual case needs no round trip
        return {}
    rows = connection.exec_driver_sql(
        "SELECT idempotency_key, content_sha256, event_id FROM event_keys WHERE idempotency_key = ANY(%(keys)s)",
        {"keys": list(keys)},
    )
    return {str(key): (str(sha), str(event_id)) for key, sha, event_id in rows}


def page(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str | None,
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
    hide: Mapping[str, Supersession] | None = None,
) -> list[dict[str, Any]]:
    """Events in (timestamp, id) order, the order GET /v1/events pages in; those that
    `hide` (per metric) supersedes are left out."""
    clauses = ["customer_id = %(customer)s"]
    params: dict[str, Any] = {"customer": customer_id, "limit": limit}
    for index, (key, superseded) in enumerate(sorted((hide or {}).items())):
        counts = superseded_clauses(superseded, params, f"h{index}")
        if counts:
            params[f"h{index}_metric"] = key
            clauses.append(f"(metric_key <> %(h{index}_metric)s OR ({' AND '.join(counts)}))")
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
    query = f"SELECT id, customer_id, metric_key, value, timestamp, properties, idempotency_key, received_at, region, correction_id FROM events WHERE {where} ORDER BY timestamp, id LIMIT %(limit)s"  # noqa: S608
    rows = connection.exec_driver_sql(query, params)
    columns = list(rows.keys())
    return [dict(zip(columns, row, strict=True)) for row in rows]
