"""The events explorer: a customer's raw events with, for each, whether it counts toward
its metric and why not — the correction that superseded it, the meter version in force at
its timestamp and the filter that leaves it out (an event a filter excludes is stored and
accepted, and not counted)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.adapters.postgres.database import get_database
from core.domain.meters import Meter
from core.services import ingest
from core.services.usage import meter_versions


def explain(
    *,
    customer_id: str,
    metric_key: str | None,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    events, next_cursor = ingest.list_events(
        customer_id=customer_id,
        metric_key=metric_key,
        start=start,
        end=end,
        cursor=cursor,
        limit=limit,
        include_superseded=True,  # shown, and said why they no longer count
    )
    meters: dict[str, Meter] = {}
    with get_database().transaction() as connection:
        for key in sorted({event["metric_key"] for event in events}):
            meters[key] = Meter(meter_versions(connection, key))
    explained = []
    for event in events:
        version = meters[event["metric_key"]].version_at(event["timestamp"])
        if event["superseded_by"] is not None:
            reason: str | None = f"superseded by correction {event['superseded_by']}"
        elif version is None:
            reason = "no meter version is in force at its timestamp"
        else:
            reason = version.exclusion(event["properties"] or {})
        explained.append(
            {
                **event,
                "meter_version": None if version is None else version.version,
                "counted": reason is None,
                "excluded_because": reason,
            }
        )
    return explained, next_cursor
