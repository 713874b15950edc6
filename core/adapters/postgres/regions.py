"""Regions in PostgreSQL (API.md §10): the publications a regional database offers and the
central's subscriptions to them, the heartbeat that makes completeness exact, the central's
cross-region idempotency, and the catalog flowing the other way.

Replication DDL (CREATE SUBSCRIPTION cannot run in a transaction) goes through its own
autocommit connection; identifiers are derived from validated region and zone names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection

from core.adapters.postgres.rows import as_dict

# What a central needs of an event (not `ingest_job_id`, a regional job; not `zone`, which
# only selects the publication). Heartbeats and partition records travel with them.
PUBLISHED_EVENT_COLUMNS = (
    "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
    "content_sha256, digest, received_at, region, correction_id"
)
# The catalog a region needs to validate and authenticate events on its own. Customers go
# without their contact and payment details (a region needs none of them).
CATALOG_TABLES = ("metrics", "metric_versions", "price_plans", "plan_versions", "api_keys")
CATALOG_CUSTOMER_COLUMNS = (
    "id, name, currency, region, billing_provider, created_at, updated_at, archived_at"
)
CATALOG_PUBLICATION = "abaxus_catalog"
DIRECTORY_PUBLICATION = "abaxus_directory"
HEARTBEATS_KEPT = "1 hour"  # older heartbeats are pruned where they are written and received

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def slug(name: str) -> str:
    """A region or zone name as part of an identifier (validated: `NAME`)."""
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not a region or zone name ([a-z0-9-], up to 63)")
    return name.replace("-", "_")


def events_publication(zone: str | None) -> str:
    """The publication of a region's events for a zone's central (or the one publication
    without zones)."""
    return "abaxus_events" if zone is None else f"abaxus_events_{slug(zone)}"


def subscription_name(central: str, region: str) -> str:
    """One per (central, region): also the replication slot's name at the region, so two
    centrals (two zones) subscribing to one region never share a slot."""
    return f"abaxus_{slug(central)}_from_{slug(region)}"


# -- a region ---------------------------------------------------------------------------


def beat(connection: Connection, region: str) -> datetime:
    """Write a heartbeat: the instant before which every event this database will ever
    commit is already committed — now, or the start of the oldest transaction still in
    progress (an event's received_at is its transaction's start), so a central holding
    this heartbeat holds every event received before it. Prunes the region's old ones."""
    beat_at: datetime = connection.exec_driver_sql(
        "INSERT INTO region_heartbeats (region, beat_at) SELECT %(region)s, "
        "least(now(), (SELECT min(xact_start) FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend' "
        "AND xact_start IS NOT NULL AND pid <> pg_backend_pid())) RETURNING beat_at",
        {"region": region},
    ).scalar_one()
    prune_heartbeats(connection)
    return beat_at


def prune_heartbeats(connection: Connection) -> None:
    """Publications carry inserts only: a prune is local to each side."""
    connection.exec_driver_sql(
        "DELETE FROM region_heartbeats WHERE beat_at < now() - %(kept)s::interval",
        {"kept": HEARTBEATS_KEPT},
    )


def ensure_event_publications(
    url: str, zones: Mapping[str, str], own_zone: str | None
) -> list[str]:
    """The publications of this region's events: one per zone with zones (a row filter:
    that zone's customers' events, and for the region's own zone also those of customers
    with no home), else one of every event. Created or brought up to date; their names."""
    wanted: dict[str, str | None] = {}
    if not zones:
        wanted[events_publication(None)] = None
    for zone in sorted(set(zones.values())):
        only = f"zone = {_literal(zone)}"
        wanted[events_publication(zone)] = f"({only} OR zone IS NULL)" if zone == own_zone else only
    with psycopg.connect(url, autocommit=True) as connection:
        for name, condition in wanted.items():
            where = f" WHERE ({condition})" if condition else ""
            tables = (
                f"events ({PUBLISHED_EVENT_COLUMNS}){where}, "
                "region_heartbeats (region, beat_at), event_partitions"
            )
            _ensure_publication(
                connection,
                name,
                tables,
                "publish = 'insert', publish_via_partition_root = true",
            )
    return list(wanted)


# -- a central --------------------------------------------------------------------------


def ensure_catalog_publications(url: str) -> None:
    """What regions replicate from a central: the catalog (with the directory of customer
    homes), and the directory alone for regions of other zones."""
    tables = ", ".join(CATALOG_TABLES)
    with psycopg.connect(url, autocommit=True) as connection:
        _ensure_publication(
            connection,
            CATALOG_PUBLICATION,
            f"{tables}, customers ({CATALOG_CUSTOMER_COLUMNS}), customer_homes",
            "publish = 'insert, update, delete'",
        )
        _ensure_publication(
            connection,
            DIRECTORY_PUBLICATION,
            "customer_homes",
            "publish = 'insert, update, delete'",
        )


def subscribe(url: str, name: str, connection_string: str, publications: Sequence[str]) -> None:
    """Create (or keep) a subscription; it copies what the publications hold, then streams.
    Creating its slot needs the publisher reachable: an error here is the caller's 4xx."""
    with psycopg.connect(url, autocommit=True) as connection:
        if _subscription_exists(connection, name):
            connection.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(name)))
            return
        connection.execute(
            sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
                sql.Identifier(name),
                sql.Literal(connection_string),
                sql.SQL(", ").join(sql.Identifier(p) for p in publications),
            )
        )


def drop_subscription(url: str, name: str) -> None:
    """Stop receiving; what was received stays. The slot at the region is dropped when the
    region answers, else left for its operator (dropping needs the publisher)."""
    with psycopg.connect(url, autocommit=True) as connection:
        if not _subscription_exists(connection, name):
            return
        identifier = sql.Identifier(name)
        connection.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(identifier))
        try:
            connection.execute(sql.SQL("DROP SUBSCRIPTION {}").format(identifier))
        except psycopg.OperationalError:
            connection.execute(
                sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(identifier)
            )
            connection.execute(sql.SQL("DROP SUBSCRIPTION {}").format(identifier))


def insert_region(connection: Connection, values: Mapping[str, Any]) -> dict[str, Any]:
    row = connection.exec_driver_sql(
        "INSERT INTO regions (region, subscription, publication, connection) "
        "VALUES (%(region)s, %(subscription)s, %(publication)s, %(connection)s) "
        "ON CONFLICT (region) DO UPDATE SET status = 'attached', detached_at = NULL, "
        "subscription = excluded.subscription, publication = excluded.publication, "
        "connection = excluded.connection RETURNING *",
        dict(values),
    ).one()
    return as_dict(row)


def get_region(connection: Connection, region: str) -> dict[str, Any] | None:
    row = connection.exec_driver_sql(
        "SELECT * FROM regions WHERE region = %(region)s", {"region": region}
    ).one_or_none()
    return None if row is None else as_dict(row)


def detach_region(connection: Connection, region: str) -> dict[str, Any]:
    row = connection.exec_driver_sql(
        "UPDATE regions SET status = 'detached', detached_at = now() "
        "WHERE region = %(region)s RETURNING *",
        {"region": region},
    ).one()
    return as_dict(row)


@dataclass(frozen=True)
class RegionRow:
    region: str
    status: str
    reported: str
    subscription: str
    complete_until: datetime | None
    last_arrival: datetime | None
    events: int
    now: datetime


def region_rows(connection: Connection, *, attached_only: bool = True) -> list[RegionRow]:
    """Each region this central subscribes to, with its newest heartbeat received, when
    that arrived, and how many of its events were folded."""
    rows = connection.exec_driver_sql(
        "SELECT r.region, r.status, r.reported, r.subscription, hb.beat_at, hb.arrived_at, "
        "coalesce(c.events, 0), now() FROM regions r "
        "LEFT JOIN LATERAL (SELECT beat_at, arrived_at FROM region_heartbeats h "
        "WHERE h.region = r.region ORDER BY beat_at DESC LIMIT 1) hb ON true "
        "LEFT JOIN region_counts c ON c.region = r.region "
        "WHERE NOT %(attached)s OR r.status = 'attached' ORDER BY r.region",
        {"attached": attached_only},
    )
    return [RegionRow(*row) for row in rows]


def set_reported(connection: Connection, region: str, status: str) -> bool:
    """Record the status last announced; True if it changed (announce it)."""
    changed = connection.exec_driver_sql(
        "UPDATE regions SET reported = %(status)s WHERE region = %(region)s "
        "AND reported <> %(status)s",
        {"region": region, "status": status},
    ).rowcount
    return bool(changed)


def count_folded(
    connection: Connection, job_ids: Sequence[int], replicated: Sequence[int], local_region: str
) -> None:
    """In the fold's transaction: how many events each region contributed (a replicated
    job — `replicated`, those of `job_ids` a subscription's apply made — counts its rows
    now, and its payload says so; an ingested one already counts)."""
    connection.exec_driver_sql(
        "UPDATE jobs j SET payload = j.payload || jsonb_build_object('events', c.n) "
        "FROM (SELECT ingest_job_id, count(*) AS n FROM events "
        "WHERE ingest_job_id = ANY(%(replicated)s) GROUP BY 1) c WHERE j.id = c.ingest_job_id",
        {"replicated": list(replicated)},
    )
    connection.exec_driver_sql(
        "INSERT INTO region_counts (region, events) "
        "SELECT coalesce(payload->>'region', %(local)s), sum((payload->>'events')::bigint) "
        "FROM jobs WHERE id = ANY(%(jobs)s) GROUP BY 1 ORDER BY 1 "
        "ON CONFLICT (region) DO UPDATE SET events = region_counts.events + excluded.events",
        {"jobs": list(job_ids), "local": local_region},
    )


def replicated_jobs(connection: Connection, job_ids: Sequence[int]) -> list[int]:
    """Those of these fold jobs the apply of a subscription made (their payload names the
    region their events came from)."""
    rows = connection.exec_driver_sql(
        "SELECT id FROM jobs WHERE id = ANY(%(jobs)s) AND payload ? 'region' ORDER BY id",
        {"jobs": list(job_ids)},
    )
    return [int(job_id) for (job_id,) in rows]


# -- cross-region idempotency (at a central) ---------------------------------------------


@dataclass(frozen=True)
class Displaced:
    """A copy that counted until an earlier copy of its key arrived."""

    region: str
    event_id: str
    customer_id: str
    metric_key: str
    timestamp: datetime


# The copy of a key that counts: the earliest received, then the smallest region name,
# then the smallest event id — a total order on copies, so the winner does not depend on
# which copy's region replicated first.
_EARLIER = (
    "(excluded.received_at, excluded.region, excluded.event_id) < "
    "(k.received_at, k.region, k.event_id)"
)
_COPY = (
    "idempotency_key, region, id, received_at, customer_id, metric_key, timestamp, content_sha256"
)

# One statement, one pass over the jobs' events: claim each key's earliest copy (a key
# already claimed by a later copy is taken over, and the copy it displaces is returned);
# every other copy is recorded in region_duplicates with the copy that counts. A key being
# claimed by a concurrent fold waits for it (the unique index) and is then compared with
# its winner; a copy whose key's winner that fold committed after this statement began is
# not visible to it: then nothing is kept, and the fold is retried (KeyBeingSettled).
_SETTLE_SQL = (
    f"WITH arrived AS MATERIALIZED (SELECT {_COPY} FROM events "  # noqa: S608 - constant clauses
    "WHERE ingest_job_id = ANY(%(jobs)s)), "
    "best AS (SELECT DISTINCT ON (idempotency_key) * FROM arrived "
    "ORDER BY idempotency_key, received_at, region, id), "
    "claimed AS (INSERT INTO region_event_keys AS k (idempotency_key, region, event_id, "
    "received_at, customer_id, metric_key, timestamp, content_sha256) "
    f"SELECT {_COPY} FROM best ORDER BY idempotency_key "
    "ON CONFLICT (idempotency_key) DO UPDATE SET region = excluded.region, "
    "event_id = excluded.event_id, received_at = excluded.received_at, "
    "customer_id = excluded.customer_id, metric_key = excluded.metric_key, "
    "timestamp = excluded.timestamp, content_sha256 = excluded.content_sha256, "
    "displaced = jsonb_build_object('region', k.region, 'event_id', k.event_id, "
    "'customer_id', k.customer_id, 'metric_key', k.metric_key, 'timestamp', k.timestamp, "
    "'received_at', k.received_at, 'content_sha256', k.content_sha256) "
    f"WHERE {_EARLIER} "
    "RETURNING k.idempotency_key, k.region, k.event_id, k.displaced), "
    "kept AS (SELECT k.idempotency_key, k.region, k.event_id FROM region_event_keys k "
    "WHERE k.idempotency_key IN (SELECT idempotency_key FROM best "
    "EXCEPT SELECT idempotency_key FROM claimed)), "
    "settled AS (SELECT idempotency_key, region, event_id FROM claimed "
    "UNION ALL SELECT * FROM kept), "
    "lost AS (INSERT INTO region_duplicates (region, event_id, idempotency_key, customer_id, "
    "metric_key, timestamp, received_at, content_sha256, winner_region, winner_event_id) "
    "SELECT a.region, a.id, a.idempotency_key, a.customer_id, a.metric_key, a.timestamp, "
    "a.received_at, a.content_sha256, w.region, w.event_id FROM arrived a "
    "JOIN settled w ON w.idempotency_key = a.idempotency_key "
    "WHERE (a.region, a.id) <> (w.region, w.event_id) "
    "ORDER BY a.region, a.id ON CONFLICT DO NOTHING RETURNING 1) "
    "SELECT NULL, NULL, NULL, NULL, (SELECT count(*) FROM arrived a WHERE NOT EXISTS "
    "(SELECT 1 FROM settled w WHERE w.idempotency_key = a.idempotency_key)), "
    "(SELECT count(*) FROM lost) "
    "UNION ALL SELECT c.idempotency_key, c.region, c.event_id, c.displaced, 0, 0 "
    "FROM claimed c WHERE c.displaced IS NOT NULL"
)


class KeyBeingSettled(Exception):
    """A key of these events was claimed by a concurrent fold that committed after this
    statement began: the fold's transaction is rolled back and its job retried."""


def settle_duplicates(connection: Connection, job_ids: Sequence[int]) -> list[Displaced]:
    """In the fold's transaction, for replicated jobs: claim each key's winner among these
    events and those seen before; record every other copy in region_duplicates (never
    counted). Returns the earlier winners an earlier copy displaced (they were counted:
    their rollups and any binding invoice are corrected by a refold job)."""
    if not job_ids:
        return []
    rows = connection.exec_driver_sql(_SETTLE_SQL, {"jobs": list(job_ids)}).all()
    if rows[0][4]:
        raise KeyBeingSettled(f"{rows[0][4]} copies' keys are being settled by another fold")
    displaced = [
        (str(key), str(region), str(event_id), dict(old))
        for key, region, event_id, old, _, _ in rows[1:]
    ]
    lost: list[Displaced] = []
    for key, region, event_id, old in displaced:
        lost.append(
            Displaced(
                str(old["region"]),
                str(old["event_id"]),
                str(old["customer_id"]),
                str(old["metric_key"]),
                datetime.fromisoformat(str(old["timestamp"])),
            )
        )
        connection.exec_driver_sql(
            "INSERT INTO region_duplicates (region, event_id, idempotency_key, customer_id, "
            "metric_key, timestamp, received_at, content_sha256, winner_region, winner_event_id) "
            "VALUES (%(region)s, %(event)s, %(key)s, %(customer)s, %(metric)s, %(timestamp)s, "
            "%(received)s, %(sha)s, %(winner_region)s, %(winner_event)s) ON CONFLICT DO NOTHING",
            {
                "region": old["region"],
                "event": old["event_id"],
                "key": key,
                "customer": old["customer_id"],
                "metric": old["metric_key"],
                "timestamp": old["timestamp"],
                "received": old["received_at"],
                "sha": old["content_sha256"],
                "winner_region": region,
                "winner_event": event_id,
            },
        )
        # copies displaced before now name the key's current winner
        connection.exec_driver_sql(
            "UPDATE region_duplicates SET winner_region = %(region)s, winner_event_id = %(event)s "
            "WHERE idempotency_key = %(key)s AND (winner_region, winner_event_id) "
            "<> (%(region)s, %(event)s)",
            {"key": key, "region": region, "event": event_id},
        )
    return lost


def duplicates_page(
    connection: Connection, *, after: tuple[str, str] | None, limit: int
) -> list[dict[str, Any]]:
    """The copies that do not count, newest key order: (region, event id) keyset."""
    params: dict[str, Any] = {"limit": limit}
    where = ""
    if after is not None:
        params["after_region"], params["after_event"] = after
        where = "WHERE (region, event_id) > (%(after_region)s, %(after_event)s) "
    rows = connection.exec_driver_sql(
        "SELECT region, event_id, idempotency_key, customer_id, metric_key, timestamp, "  # noqa: S608 - fixed clauses
        "received_at, content_sha256, winner_region, winner_event_id, recorded_at "
        f"FROM region_duplicates {where}ORDER BY region, event_id LIMIT %(limit)s",
        params,
    )
    return [as_dict(row) for row in rows]


def count_duplicates(connection: Connection) -> int:
    return int(connection.exec_driver_sql("SELECT count(*) FROM region_duplicates").scalar_one())


# -- helpers ------------------------------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _subscription_exists(connection: psycopg.Connection[Any], name: str) -> bool:
    found = connection.execute(
        "SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)
    ).fetchone()
    return found is not None


def _ensure_publication(
    connection: psycopg.Connection[Any], name: str, tables: str, options: str
) -> None:
    exists = connection.execute(
        "SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)
    ).fetchone()
    identifier = sql.Identifier(name).as_string(connection)
    if exists:
        connection.execute(f"ALTER PUBLICATION {identifier} SET TABLE {tables}")
    else:
        connection.execute(f"CREATE PUBLICATION {identifier} FOR TABLE {tables} WITH ({options})")
