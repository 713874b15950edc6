"""Invoices, their gap-free number series, and adjustments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import (
    adjustments,
    invoice_run_items,
    invoice_runs,
    invoice_series,
    invoices,
)


def get(connection: Connection, invoice_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(invoices).where(invoices.c.id == invoice_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).one_or_none()
    return None if row is None else as_dict(row)


def for_period(
    connection: Connection, subscription_id: str, start: datetime, end: datetime
) -> dict[str, Any] | None:
    row = connection.execute(
        select(invoices).where(
            invoices.c.subscription_id == subscription_id,
            invoices.c.period_start == start,
            invoices.c.period_end == end,
        )
    ).one_or_none()
    return None if row is None else as_dict(row)


def insert_draft(connection: Connection, values: dict[str, Any]) -> bool:
    """False when the subscription already has an invoice for the period (UNIQUE)."""
    result = connection.execute(
        insert(invoices)
        .values(values)
        .on_conflict_do_nothing(index_elements=["subscription_id", "period_start", "period_end"])
    )
    return bool(result.rowcount)


def change(connection: Connection, invoice_id: str, values: dict[str, Any]) -> dict[str, Any]:
    row = connection.execute(
        update(invoices)
        .where(invoices.c.id == invoice_id)
        .values({**values, "updated_at": datetime.now().astimezone()})
        .returning(invoices)
    ).one()
    return as_dict(row)


def next_number(connection: Connection, series: str) -> int:
    """The series' next number, taken under the counter row's lock: concurrent issuers
    queue here, and a rolled-back issue gives its number back (no gaps)."""
    statement = (
        insert(invoice_series)
        .values(series=series, last_number=1)
        .on_conflict_do_update(
            index_elements=["series"], set_={"last_number": invoice_series.c.last_number + 1}
        )
        .returning(invoice_series.c.last_number)
    )
    return int(connection.execute(statement).scalar_one())


def page(
    connection: Connection,
    *,
    customer_id: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = select(invoices)
    if customer_id is not None:
        query = query.where(invoices.c.customer_id == customer_id)
    if status is not None:
        query = query.where(invoices.c.status == status)
    return keyset_page(connection, query, invoices.c.id, after=after, limit=limit)


def issued_covering(connection: Connection, job_ids: list[int]) -> list[dict[str, Any]]:
    """Issued (or later) invoices whose period holds events of these ingestion jobs, with
    the metrics those events are for: late usage."""
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT i.id AS invoice_id, e.metric_key FROM events e "
        "JOIN invoices i ON i.customer_id = e.customer_id "
        "AND e.timestamp >= i.period_start AND e.timestamp < i.period_end "
        "WHERE e.ingest_job_id = ANY(%(jobs)s) AND i.status IN ('issued', 'paid', 'payment_failed') "
        "ORDER BY 1, 2",
        {"jobs": job_ids},
    )
    return [{"invoice_id": str(i), "metric_key": str(m)} for i, m in rows]


def insert_adjustment(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    row = connection.execute(insert(adjustments).values(values).returning(adjustments)).one()
    return as_dict(row)


def pending_adjustments(
    connection: Connection, customer_id: str, *, lock: bool = False
) -> list[dict[str, Any]]:
    query = (
        select(adjustments)
        .where(adjustments.c.customer_id == customer_id, adjustments.c.applied_invoice_id.is_(None))
        .order_by(adjustments.c.created_at, adjustments.c.id)
    )
    if lock:
        query = query.with_for_update()
    return [as_dict(row) for row in connection.execute(query)]


def apply_adjustments(
    connection: Connection, ids: list[str], invoice_id: str | None, at: datetime | None
) -> None:
    if ids:
        connection.execute(
            update(adjustments)
            .where(adjustments.c.id.in_(ids))
            .values(applied_invoice_id=invoice_id, applied_at=at)
        )


def adjusted_so_far(
    connection: Connection, original_invoice_id: str, charge: str
) -> tuple[Any, Any]:
    """(quantity, amount) already adjusted on an issued invoice's charge."""
    row = connection.exec_driver_sql(
        "SELECT coalesce(sum(quantity_delta), 0), coalesce(sum(amount_delta), 0) FROM adjustments "
        "WHERE original_invoice_id = %(invoice)s AND charge = %(charge)s AND kind = 'late_usage'",
        {"invoice": original_invoice_id, "charge": charge},
    ).one()
    return row[0], row[1]


def adjustments_page(
    connection: Connection, *, customer_id: str, after: str | None, limit: int
) -> list[dict[str, Any]]:
    query = select(adjustments).where(adjustments.c.customer_id == customer_id)
    return keyset_page(connection, query, adjustments.c.id, after=after, limit=limit)


def subscriptions_to_bill(connection: Connection, cutoff: datetime) -> list[dict[str, Any]]:
    """Subscriptions started before the cutoff, with their plan's interval."""
    rows = connection.exec_driver_sql(
        "SELECT s.id, s.starts_at, s.ends_at, v.interval FROM subscriptions s "
        "JOIN plan_versions v ON v.plan_code = s.plan_code AND v.version = s.plan_version "
        "WHERE s.starts_at < %(cutoff)s ORDER BY s.id",
        {"cutoff": cutoff},
    )
    return [dict(zip(("id", "starts_at", "ends_at", "interval"), row, strict=True)) for row in rows]


def invoiced_period_ends(connection: Connection, subscription_id: str) -> set[datetime]:
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
    """The run's subscriptions by the state of their period's invoice ('requested' when
    there is none yet)."""
    rows = connection.exec_driver_sql(
        "SELECT coalesce(i.status, 'requested'), count(*) FROM invoice_run_items r "
        "LEFT JOIN invoices i ON i.subscription_id = r.subscription_id "
        "AND i.period_start = r.period_start AND i.period_end = r.period_end "
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
