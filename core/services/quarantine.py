"""Quarantine (API.md §18): events that broke a quarantining contract are stored, their
keys consumed, and never counted — until a release checks them again against the
contract in force for their timestamp (typically after a new version fixed it) and
counts those that pass, through the same hand-off to aggregation as ingestion. Events of
an issued period that a release counts reach money as late usage (adjustments)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.adapters.postgres import corrections as correction_rows
from core.adapters.postgres import events as event_rows
from core.adapters.postgres import metrics as metric_rows
from core.adapters.postgres import quarantine as rows
from core.adapters.postgres.database import get_database
from core.domain import event_types
from core.domain.contracts import may_change, require_owner
from core.domain.errors import FieldError, NotFound, ValidationFailed
from core.domain.events import month_starts
from core.services import audit, notify
from core.services.caller import Caller
from core.services.contracts import compile_rows
from core.services.ingest import FOLD_HANDOFF
from core.services.listing import paginate

# One release handles at most this many events; `remaining` says how many are still held.
RELEASE_EVENTS_MAX = 5000


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "customer_id": row["customer_id"],
        "metric_key": row["metric_key"],
        "value": row["value"],
        "timestamp": row["timestamp"],
        "properties": row["properties"],
        "idempotency_key": row["idempotency_key"],
        "producer": row["producer"],
        "metric_version": row["metric_version"],
        "violations": row["violations"],
        "received_at": row["received_at"],
        "checked_at": row["checked_at"],
        "released_at": row["released_at"],
    }


def list_held(
    *,
    metric_key: str | None,
    customer_id: str | None,
    released: bool,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(
                connection,
                metric_key=metric_key,
                customer_id=customer_id,
                released=released,
                after=after,
                limit=n,
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )
    return [view(row) for row in page], next_cursor


def release(caller: Caller, metric_key: str, ids: Sequence[str] | None) -> dict[str, Any]:
    """Check the held events of `metric_key` (those of `ids`, or all, RELEASE_EVENTS_MAX at
    a time) against the contract in force for their timestamps now; count those that
    pass, keep the others with their current violations."""
    if ids is not None and len(ids) > RELEASE_EVENTS_MAX:
        raise ValidationFailed(
            f"at most {RELEASE_EVENTS_MAX} ids per release",
            errors=[FieldError(("body", "ids"), f"at most {RELEASE_EVENTS_MAX}")],
        )
    database = get_database()
    with database.transaction() as connection:
        # The metric row lock orders a release after a new version being created.
        metric = metric_rows.lock(connection, metric_key)
        if metric is None:
            raise NotFound(f"no metric {metric_key!r}")
        versions = metric_rows.versions(connection, [metric_key])[metric_key]
        require_owner(caller.scopes, caller.team, metric_key, versions, "release the events")
        book = compile_rows(versions)
        superseded = correction_rows.supersession(connection, metric_key)
        found = rows.held(connection, metric_key, ids, limit=RELEASE_EVENTS_MAX)
        passing: dict[str, int] = {}
        still: list[tuple[str, int, list[dict[str, str]]]] = []
        results = []
        for row in found:
            version, contract = book.at(row["timestamp"])
            violations = [] if contract is None else contract.check(row["value"], row["properties"])
            if version is None:
                violations = []  # before the metric's first version: stored, counted by none
            # Received before a replace of its window was applied, it would have been
            # superseded had it been accepted: it stays held (a revert lets it go).
            by = superseded.superseded_by(
                customer_id=row["customer_id"],
                timestamp=row["timestamp"],
                received_at=row["received_at"],
                idempotency_key=row["idempotency_key"],
                correction_id=None,
            )
            if violations:
                shown = [v.view() for v in violations]
                still.append((row["id"], version or row["metric_version"], shown))
                results.append({"id": row["id"], "status": "quarantined", "violations": shown})
            elif by is not None:
                results.append(
                    {"id": row["id"], "status": "superseded", "violations": [], "superseded_by": by}
                )
            else:
                passing[row["id"]] = version or row["metric_version"]
                results.append({"id": row["id"], "status": "released", "violations": []})
        missing = sorted(set(ids or ()) - {row["id"] for row in found})
        results.extend({"id": i, "status": "not_held", "violations": []} for i in missing)
        rows.recheck(connection, still)
        job_id = None
        if passing:
            event_rows.ensure_partitions(
                database.maintenance_engine,
                month_starts(row["timestamp"] for row in found if row["id"] in passing),
            )
            job_id, moved = rows.release(
                connection, sorted(passing), passing, FOLD_HANDOFF, by=caller.actor
            )
            if moved != len(passing):
                raise RuntimeError(f"release moved {moved} events, expected {len(passing)}")
        remaining = rows.count_held(connection, metric_key)
        summary = {
            "metric_key": metric_key,
            "released": len(passing),
            "still_quarantined": sum(
                r["status"] != "released" for r in results if r["status"] != "not_held"
            ),
            "not_held": len(missing),
            "remaining": remaining,
            "results": results,
        }
        audit.record(
            connection,
            caller,
            action="quarantine.released",
            entity="metric",
            entity_id=metric_key,
            state=summary,
            changes={k: v for k, v in summary.items() if k != "results"},
        )
    if job_id is not None:
        notify.emit_later(
            event_types.EVENTS_INGESTED,
            {"job_id": job_id},
            event_id=f"ingest-job-{job_id}",
            coalesce=True,
        )
    return summary


def held_counts() -> dict[str, int]:
    with get_database().transaction() as connection:
        return rows.held_counts(connection)


def may_release(caller: Caller, owner: str | None) -> bool:
    return may_change(caller.scopes, caller.team, owner)
