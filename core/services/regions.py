"""Regions (API.md §10): a region's heartbeat and publications, a central's subscriptions,
what it knows of each region (status, complete_until, lag), the consistency policy that
drafting and issuing obey, and cross-region duplicates.

Roles (ABAXUS_ROLE): `all` is one database and none of this applies beyond a single local
region that is always complete up to now. A `region` writes heartbeats and publishes its
events (per residency zone), and replicates the catalog from its central. A `central`
subscribes to its regions (`POST /v1/regions`), folds what arrives exactly as it folds
ingested events, and bills."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

import psycopg

from core.adapters import queue
from core.adapters.postgres import invoices as invoice_rows
from core.adapters.postgres import regions as rows
from core.adapters.postgres import rollups
from core.adapters.postgres.database import get_database
from core.config import Settings, settings
from core.domain import event_types
from core.domain import regions as domain
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed, WrongRegion
from core.domain.pagination import decode_cursor, encode_cursor
from core.services import audit, completeness, notify
from core.services.caller import Caller
from core.services.invoicing import adjustments
from core.services.usage import AGGREGATE_QUEUE, FOLD_JOB, meter_versions

log = logging.getLogger(__name__)

REGION_SWAP_JOB = "region_swap"  # payload: a displaced copy's metric, customer, timestamp
ARRIVALS_CHANNEL = "abaxus_arrivals"


# -- a region ----------------------------------------------------------------------------


def prepare(config: Settings) -> list[str]:
    """At start-up, what the role needs of the database: a region's publications of its
    events and its subscriptions to the catalog (its central's) and to other zones'
    directories of customer homes; a central's catalog publications. Idempotent."""
    url = get_database().url
    if config.abaxus_role == "region":
        made = rows.ensure_event_publications(url, config.residency_zones, config.zone)
        here = config.abaxus_region
        if config.abaxus_catalog_connection:
            rows.subscribe(
                url,
                f"abaxus_{rows.slug(here)}_catalog",
                config.abaxus_catalog_connection,
                [rows.CATALOG_PUBLICATION],
            )
        directories = [c for c in config.abaxus_directory_connections.split("|") if c.strip()]
        for index, connection in enumerate(directories):
            rows.subscribe(
                url,
                f"abaxus_{rows.slug(here)}_directory_{index}",
                connection.strip(),
                [rows.DIRECTORY_PUBLICATION],
            )
        return made
    if config.abaxus_role == "central":
        rows.ensure_catalog_publications(url)
    return []


def beat() -> datetime:
    with get_database().transaction() as connection:
        return rows.beat(connection, settings().abaxus_region)


def run_heartbeats(stop: threading.Event) -> threading.Thread:
    """A region's heartbeat, every ABAXUS_HEARTBEAT_SECONDS until `stop` (a failure is
    logged and the next beat tries again: a missing beat only makes the region look late)."""

    def loop() -> None:
        while True:
            try:
                beat()
            except Exception:  # keep beating: the database may be back next time
                log.exception("region heartbeat failed")
            if stop.wait(settings().abaxus_heartbeat_seconds):
                return

    thread = threading.Thread(target=loop, name="region-heartbeat", daemon=True)
    thread.start()
    return thread


def follow_arrivals(stop: threading.Event, drain: Any) -> threading.Thread:
    """A central's aggregator loop: fold as soon as a subscription applies a transaction of
    events (the arrival trigger NOTIFYs at its commit), and at least every heartbeat
    interval; check the regions' status on the way (region.stalled)."""

    def loop() -> None:
        interval = settings().abaxus_heartbeat_seconds
        while not stop.is_set():
            try:
                with psycopg.connect(get_database().url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {ARRIVALS_CHANNEL}")
                    while not stop.is_set():
                        drain()
                        check_regions()
                        for _ in connection.notifies(timeout=interval, stop_after=1):
                            pass
            except Exception:  # reconnect: the database may be restarting
                log.exception("following region arrivals failed; retrying")
                stop.wait(interval)

    thread = threading.Thread(target=loop, name="region-arrivals", daemon=True)
    thread.start()
    return thread


# -- a central: the regions ----------------------------------------------------------------


def add_region(caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """Subscribe to a region's events (its zone's publication, or the only one)."""
    config = _central()
    region = str(body["region"])
    try:
        rows.slug(region)
    except ValueError as error:
        raise ValidationFailed(
            str(error), code="invalid_region", errors=[FieldError(("body", "region"), str(error))]
        ) from error
    with get_database().transaction() as connection:
        known = rows.get_region(connection, region)
    if known is not None and known["status"] == "detached":
        raise Conflict(
            f"region {region!r} was detached; its events stay here, and attaching it again "
            "would receive them twice: attach it under a new name",
            code="region_detached",
        )
    zone = config.zone
    publication = rows.events_publication(zone)
    name = rows.subscription_name(zone or config.abaxus_region, region)
    try:
        rows.subscribe(get_database().url, name, str(body["connection"]), [publication])
    except psycopg.Error as error:
        raise ValidationFailed(
            f"could not subscribe to region {region!r}: {error.diag.message_primary or error}",
            code="region_unreachable",
            errors=[FieldError(("body", "connection"), "the region's database did not accept")],
        ) from error
    with get_database().transaction() as connection:
        created = rows.insert_region(
            connection,
            {
                "region": region,
                "subscription": name,
                "publication": publication,
                "connection": str(body["connection"]),
            },
        )
        audit.record(
            connection,
            caller,
            action="region.attached",
            entity="region",
            entity_id=region,
            state={"region": region, "subscription": name, "publication": publication},
        )
        return completeness.view(connection, created["region"])


def attach(caller: Caller, region: str, connection: str) -> dict[str, Any]:
    """Attach a region (again: an attached one is kept as it is)."""
    with get_database().transaction() as db:
        known = rows.get_region(db, region)
        if known is not None and known["status"] == "attached":
            return completeness.view(db, region)
    return add_region(caller, {"region": region, "connection": connection})


def region_name(name: str) -> str:
    """A valid region name, or ValueError saying why."""
    rows.slug(name)
    return name


def detach_region(caller: Caller, region: str) -> dict[str, Any]:
    """Stop receiving a region's events; what it sent stays (and stays billed)."""
    _central()
    with get_database().transaction() as connection:
        known = rows.get_region(connection, region)
    if known is None:
        raise NotFound(f"no region {region!r}", code="unknown_region")
    rows.drop_subscription(get_database().url, known["subscription"])
    with get_database().transaction() as connection:
        rows.detach_region(connection, region)
        audit.record(
            connection,
            caller,
            action="region.detached",
            entity="region",
            entity_id=region,
            state={"region": region},
        )
        return completeness.view(connection, region, attached_only=False)


def check_regions() -> list[str]:
    """Announce each region that became stalled (region.stalled, once per stall) and note
    recoveries; the regions now stalled."""
    if settings().abaxus_role != "central":
        return []
    stalled = []
    with get_database().transaction() as connection:
        for view in completeness.views(connection):
            if rows.set_reported(connection, view["region"], view["status"]) and (
                view["status"] == domain.STALLED
            ):
                notify.emit_after_commit(
                    event_types.REGION_STALLED,
                    {
                        "region": view["region"],
                        "complete_until": None
                        if view["complete_until"] is None
                        else view["complete_until"].isoformat(),
                        "lag_seconds": view["lag_seconds"],
                    },
                    event_id=f"region-stalled-{view['region']}-{completeness.database_now(connection).isoformat()}",
                )
                log.warning("region stalled", extra={"region": view["region"]})
            if view["status"] == domain.STALLED:
                stalled.append(view["region"])
    return stalled


# -- cross-region duplicates ----------------------------------------------------------------


def settle_duplicates(connection: Any, replicated: list[int]) -> None:
    """In the fold's transaction, for its replicated jobs: the copy of each key that counts
    (rows.settle_duplicates); a displaced earlier winner is corrected by a refold job."""
    if not replicated:
        return
    for lost in rows.settle_duplicates(connection, replicated):
        queue.enqueue(
            connection,
            AGGREGATE_QUEUE,
            REGION_SWAP_JOB,
            {
                "metric_key": lost.metric_key,
                "customer_id": lost.customer_id,
                "timestamp": lost.timestamp.isoformat(),
            },
        )


def refold_displaced(job: queue.Job) -> None:
    """A copy that counted was displaced by an earlier copy of its key: rebuild the
    rollups of its hour and record what binding invoices of its period now miss or
    over-bill (the late-usage difference, idempotent)."""
    metric = str(job.payload["metric_key"])
    customer = str(job.payload["customer_id"])
    instant = datetime.fromisoformat(str(job.payload["timestamp"]))
    with get_database().transaction() as connection:
        rollups.lock_metrics(connection, [metric], exclusive=True)
        rollups.refold_window(
            connection,
            metric,
            meter_versions(connection, metric),
            customer_id=customer,
            start=instant,
            end=instant + timedelta(microseconds=1),
            fold_queue=AGGREGATE_QUEUE,
            fold_kind=FOLD_JOB,
        )
        for invoice_id in invoice_rows.binding_at(connection, customer, instant):
            adjustments.adjust_late_usage(connection, invoice_id, metric)


def list_duplicates(*, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    position = decode_cursor(cursor)
    after = None if position is None else (str(position["r"]), str(position["e"]))
    with get_database().transaction() as connection:
        found = rows.duplicates_page(connection, after=after, limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    next_cursor = (
        encode_cursor({"r": found[-1]["region"], "e": found[-1]["event_id"]}) if more else None
    )
    return [_duplicate_view(row) for row in found], next_cursor


def _duplicate_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "region": row["region"],
        "event_id": row["event_id"],
        "idempotency_key": row["idempotency_key"],
        "customer_id": row["customer_id"],
        "metric_key": row["metric_key"],
        "timestamp": row["timestamp"],
        "received_at": row["received_at"],
        "content_sha256": row["content_sha256"],
        "counted": {"region": row["winner_region"], "event_id": row["winner_event_id"]},
        "recorded_at": row["recorded_at"],
    }


# -- helpers ------------------------------------------------------------------------------


def _central() -> Settings:
    config = settings()
    if config.abaxus_role != "central":
        raise WrongRegion(
            "regions are attached at a central (ABAXUS_ROLE=central); this deployment is "
            f"{config.abaxus_role!r}",
            code="not_central",
        )
    return config


def list_regions() -> list[dict[str, Any]]:
    with get_database().transaction() as connection:
        return completeness.views(connection)


def count_duplicates() -> int:
    with get_database().transaction() as connection:
        return rows.count_duplicates(connection)
