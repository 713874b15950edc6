"""What a central knows of its regions now (API.md §10): each one's status, complete_until
and lag, whether a window is complete, and the consistency policy that drafting and
issuing obey. Read by usage, pricing and invoicing; no dependency on them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.adapters.postgres import regions as rows
from core.config import settings
from core.domain import regions as domain
from core.domain.errors import Conflict
from core.observability import region_complete_until, region_lag


def view(connection: Any, region: str, *, attached_only: bool = True) -> dict[str, Any]:
    return next(v for v in views(connection, attached_only=attached_only) if v["region"] == region)


def views(connection: Any, *, attached_only: bool = True) -> list[dict[str, Any]]:
    """Each region as GET /v1/regions shows it (in `all`: the one local region, complete
    up to now); sets the lag and complete_until gauges on the way."""
    config = settings()
    if config.abaxus_role == "all":
        current = database_now(connection)
        return [
            {
                "region": config.abaxus_region,
                "status": domain.STREAMING,
                "complete_until": current,
                "lag_seconds": 0.0,
                "events": _local_events(connection, config.abaxus_region),
                "attached": True,
            }
        ]
    enabled = _enabled_subscriptions(connection)
    shown = []
    for row in rows.region_rows(connection, attached_only=attached_only):
        status = domain.status_of(
            complete_until=row.complete_until,
            last_arrival=row.last_arrival,
            now=row.now,
            stall_seconds=config.abaxus_region_stall_seconds,
            enabled=enabled.get(row.subscription, False),
        )
        lag = domain.lag_seconds(row.complete_until, row.now)
        if row.status == "attached":
            region_lag.labels(row.region).set(-1 if lag is None else lag)
            if row.complete_until is not None:
                region_complete_until.labels(row.region).set(row.complete_until.timestamp())
        shown.append(
            {
                "region": row.region,
                "status": status if row.status == "attached" else "detached",
                "complete_until": row.complete_until,
                "lag_seconds": lag,
                "events": row.events,
                "attached": row.status == "attached",
            }
        )
    return shown


# -- consistency --------------------------------------------------------------------------


def completeness(connection: Any, until: datetime) -> domain.Completeness:
    """Whether everything up to `until` is known here (API.md §10)."""
    now = database_now(connection)
    if settings().abaxus_role == "all":
        return domain.completeness(until, now, [])
    known = [
        domain.RegionView(row.region, row.complete_until) for row in rows.region_rows(connection)
    ]
    return domain.completeness(until, now, known)


def require_complete(connection: Any, period_end: datetime) -> domain.Completeness:
    """Before drafting or issuing a period's invoice at a central: under `wait`, a period
    some region has not completed is refused (409 region_incomplete, naming them); under
    `bill_available` it goes on and the invoice records what it lacked."""
    found = completeness(connection, period_end)
    if settings().abaxus_role == "all" or not found.lacking:
        return domain.Completeness(True, found.complete_until, ())
    if settings().abaxus_region_policy == "wait":
        raise Conflict(
            f"regions {', '.join(found.lacking)} have not completed the period ending "
            f"{period_end.isoformat()} (ABAXUS_REGION_POLICY=wait); the billing tick retries",
            code="region_incomplete",
        )
    return found


def realtime_regions(connection: Any) -> list[dict[str, Any]]:
    """Real-time summaries' `regions`: up to when each region's events are known here."""
    config = settings()
    if config.abaxus_role == "all":
        return [{"region": config.abaxus_region, "as_of": database_now(connection)}]
    return [
        {"region": row.region, "as_of": row.complete_until} for row in rows.region_rows(connection)
    ]


def database_now(connection: Any) -> datetime:
    found: datetime = connection.exec_driver_sql("SELECT now()").scalar_one()
    return found


def _enabled_subscriptions(connection: Any) -> dict[str, bool]:
    return {
        str(name): bool(enabled)
        for name, enabled in connection.exec_driver_sql(
            "SELECT subname, subenabled FROM pg_subscription WHERE subdbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    }


def _local_events(connection: Any, region: str) -> int:
    found = connection.exec_driver_sql(
        "SELECT events FROM region_counts WHERE region = %(region)s", {"region": region}
    ).scalar_one_or_none()
    return int(found or 0)
