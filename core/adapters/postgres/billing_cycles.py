"""What the billing cycle reads: subscriptions due for an invoice, and bulk invoice runs
(which subscriptions a run asked for, and how far each got)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from core.adapters.postgres.rows import as_dict
from core.adapters.postgres.tables import invoice_run_items, invoice_runs


def subscriptions_to_bill(connection: Connection, cutoff: datetime) -> list[dict[str, Any]]:
    """Subscriptions started before the cutoff, with their plan's interval."""
    rows = connection.exec_driver_sql(
        "SELECT s.id, s.starts_at, s.anchor_at, s.ends_at, v.interval FROM subscriptions s "
        "JOIN plan_versions v ON v.plan_code = s.plan_code AND v.version = s.plan_version "
        "WHERE s.starts_at < %(cutoff)s ORDER BY s.id",
        {"cutoff": cutoff},
    )
    return [
        dict(zip(("id", "starts_at", "anchor_at", "ends_at", "interval"), row, strict=True))
        for row in rows
    ]


def invoiced_period_ends(connection: Connection, subscription_id: str) -> set[datetime]:
    """Ends of the periods that have an invoice, voided ones included: the cycle never
    re-invoices a period someone voided (a replacement is asked for explicitly)."""
    rows = connection.exec_driver_sql(
        "SELECT period_end FROM invoices WHERE subscription_id = %(s)s",
        {"s": subscription_id},
    )
    return {end for (end,) in rows}


def insert_run(connection: Connection, run: dict[str, Any], items: list[dict[str, Any]]) -> None:
    connection.execute(invoice_runs.insert().values(run))
    if items:
        connection.execute(invoice_run_items.insert(), items)


def get_run(connection: Connection, run_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(invoice_runs).where(invoice_runs.c.id == run_id)).one_or_none()
    return None if row is None else as_dict(row)


def run_progress(connection: Connection, run_id: str) -> dict[str, int]:
    """The run's subscriptions by the state of their period's invoice — the live one, else
    the latest voided one — ('requested' when there is none yet)."""
    rows = connection.exec_driver_sql(
        "SELECT coalesce(i.status, 'requested'), count(*) FROM invoice_run_items r "
        "LEFT JOIN LATERAL (SELECT status FROM invoices i WHERE i.subscription_id = "
        "r.subscription_id AND i.period_start = r.period_start AND i.period_end = r.period_end "
        "ORDER BY (i.status = 'void'), i.created_at DESC LIMIT 1) i ON true "
        "WHERE r.run_id = %(run)s GROUP BY 1",
        {"run": run_id},
    )
    return {str(status): int(count) for status, count in rows}


def run_failures(connection: Connection, run_id: str) -> list[dict[str, Any]]:
    """The run's invoice requests the broker dead-lettered (refused by `calculate`)."""
    rows = connection.exec_driver_sql(
        "SELECT ce_id, error_code, error_data, received_at FROM dead_letters "
        "WHERE ce_id LIKE %(prefix)s ORDER BY id",
        {"prefix": f"invoice-request-{run_id}-%"},
    )
    return [
        {"ce_id": ce_id, "code": code, "detail": data, "at": at} for ce_id, code, data, at in rows
    ]
