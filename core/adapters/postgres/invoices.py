"""Invoices, their gap-free number series, adjustments, and the locks that order issuing
against the fold (docs/concepts.md, "Every event counted once")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import adjustments, invoice_series, invoices
from core.domain.invoices.status import BINDING


def get(connection: Connection, invoice_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(invoices).where(invoices.c.id == invoice_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).one_or_none()
    return None if row is None else as_dict(row)


def for_period(
    connection: Connection, subscription_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Every invoice of the subscription's period, oldest first (voided ones and their
    replacements; at most one is live)."""
    rows = connection.execute(
        select(invoices)
        .where(
            invoices.c.subscription_id == subscription_id,
            invoices.c.period_start == start,
            invoices.c.period_end == end,
        )
        .order_by(invoices.c.created_at, invoices.c.id)
    )
    return [as_dict(row) for row in rows]


def insert_draft(connection: Connection, values: dict[str, Any]) -> bool:
    """False when a unique rule refused it: the period (or, for an adjustments invoice,
    the customer and currency) already has a live draft, or the voided invoice it would
    replace already has its replacement. The caller reads what won."""
    result = connection.execute(insert(invoices).values(values).on_conflict_do_nothing())
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


# -- the order between issuing and the fold ---------------------------------------------


def lock_subscription(connection: Connection, subscription_id: str) -> None:
    """Taken by issuing and voiding before they read anything: a fold of events of this
    customer waits for them (it takes the same row FOR SHARE), and they wait for a fold."""
    connection.exec_driver_sql(
        "SELECT 1 FROM subscriptions WHERE id = %(s)s FOR NO KEY UPDATE", {"s": subscription_id}
    )


def share_subscriptions_of_jobs(connection: Connection, job_ids: Sequence[int]) -> None:
    """The fold's side of the same lock: every subscription of the customers whose events
    these ingestion jobs hold, FOR SHARE (folds do not wait for each other), in id order."""
    connection.exec_driver_sql(
        "SELECT 1 FROM subscriptions WHERE customer_id IN ("
        "SELECT DISTINCT customer_id FROM events WHERE ingest_job_id = ANY(%(jobs)s)) "
        "ORDER BY id FOR SHARE",
        {"jobs": list(job_ids)},
    )


def binding_covering(connection: Connection, job_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Binding invoices whose period holds events of these ingestion jobs, with the
    metrics those events are for: late usage. Read after `share_subscriptions_of_jobs`,
    so an issue that was in progress has committed and is seen here."""
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT i.id AS invoice_id, e.metric_key FROM events e "
        "JOIN invoices i ON i.customer_id = e.customer_id "
        "AND e.timestamp >= i.period_start AND e.timestamp < i.period_end "
        "WHERE e.ingest_job_id = ANY(%(jobs)s) AND i.kind = 'subscription' "
        "AND i.status = ANY(%(binding)s) ORDER BY 1, 2",
        {"jobs": list(job_ids), "binding": list(BINDING)},
    )
    return [{"invoice_id": str(i), "metric_key": str(m)} for i, m in rows]


def binding_at(connection: Connection, customer_id: str, instant: datetime) -> list[str]:
    """The customer's binding subscription invoices whose period holds `instant`."""
    rows = connection.exec_driver_sql(
        "SELECT id FROM invoices WHERE customer_id = %(customer)s AND kind = 'subscription' "
        "AND period_start <= %(at)s AND period_end > %(at)s AND status = ANY(%(binding)s) "
        "ORDER BY id",
        {"customer": customer_id, "at": instant, "binding": list(BINDING)},
    )
    return [str(invoice_id) for (invoice_id,) in rows]


def latest_binding_of_plan(
    connection: Connection, plan_code: str, periods: int
) -> list[dict[str, Any]]:
    """The latest `periods` binding subscription invoices of each subscription on the plan
    (any version), with what adjustments later recorded for their periods (late usage,
    corrections: not manual ones), oldest first per subscription."""
    rows = connection.exec_driver_sql(
        "SELECT i.id, i.subscription_id, i.customer_id, i.period_start, i.period_end, "
        "i.currency, i.lines, i.issued_at, coalesce(a.adjusted, 0) AS adjusted FROM ("
        "SELECT i.*, row_number() OVER (PARTITION BY i.subscription_id "
        "ORDER BY i.period_end DESC) AS n FROM invoices i "
        "JOIN subscriptions s ON s.id = i.subscription_id "
        "WHERE s.plan_code = %(plan)s AND i.kind = 'subscription' "
        "AND i.status = ANY(%(binding)s)) i "
        "LEFT JOIN LATERAL (SELECT sum(amount_delta) AS adjusted FROM adjustments "
        "WHERE original_invoice_id = i.id AND kind IN ('late_usage', 'correction') "
        "AND cancelled_at IS NULL) a ON true "
        "WHERE i.n <= %(periods)s ORDER BY i.customer_id, i.subscription_id, i.period_end",
        {"plan": plan_code, "binding": list(BINDING), "periods": periods},
    )
    return [as_dict(row) for row in rows]


# -- adjustments --------------------------------------------------------------------------


def insert_adjustment(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    row = connection.execute(insert(adjustments).values(values).returning(adjustments)).one()
    return as_dict(row)


def get_adjustment(connection: Connection, adjustment_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(adjustments).where(adjustments.c.id == adjustment_id)
    ).one_or_none()
    return None if row is None else as_dict(row)


def pending_adjustments(
    connection: Connection, customer_id: str, currency: str, *, lock: bool = False
) -> list[dict[str, Any]]:
    """What the customer's next invoice in `currency` carries, oldest first. Locked by
    issuing: two invoices issuing at once for one customer carry each adjustment once
    (the second, after the first commits, no longer finds the first's)."""
    query = (
        select(adjustments)
        .where(
            adjustments.c.customer_id == customer_id,
            adjustments.c.currency == currency,
            adjustments.c.applied_invoice_id.is_(None),
            adjustments.c.cancelled_at.is_(None),
        )
        .order_by(adjustments.c.created_at, adjustments.c.id)
    )
    if lock:
        query = query.with_for_update()
    return [as_dict(row) for row in connection.execute(query)]


def apply_adjustments(
    connection: Connection, ids: Sequence[str], invoice_id: str, at: datetime
) -> None:
    if ids:
        connection.execute(
            update(adjustments)
            .where(adjustments.c.id.in_(list(ids)))
            .values(applied_invoice_id=invoice_id, applied_at=at)
        )


def release_adjustments(connection: Connection, ids: Sequence[str]) -> None:
    if ids:
        connection.execute(
            update(adjustments)
            .where(adjustments.c.id.in_(list(ids)))
            .values(applied_invoice_id=None, applied_at=None)
        )


def cancel_adjustments(
    connection: Connection, ids: Sequence[str], reason: str, at: datetime
) -> None:
    if ids:
        connection.execute(
            update(adjustments)
            .where(adjustments.c.id.in_(list(ids)))
            .values(cancelled_at=at, cancel_reason=reason)
        )


def adjustments_around(connection: Connection, invoice_id: str) -> list[dict[str, Any]]:
    """Every adjustment carried by or born of the invoice, locked, with whether the invoice
    carrying it is binding."""
    rows = connection.exec_driver_sql(
        "SELECT a.*, c.status AS carrier_status FROM adjustments a "
        "LEFT JOIN invoices c ON c.id = a.applied_invoice_id "
        "WHERE a.applied_invoice_id = %(i)s OR a.original_invoice_id = %(i)s "
        "ORDER BY a.created_at, a.id FOR UPDATE OF a",
        {"i": invoice_id},
    )
    return [dict(row._mapping) for row in rows]


def period_adjusted(
    connection: Connection, subscription_id: str, start: datetime, end: datetime
) -> dict[str, tuple[Decimal, Decimal]]:
    """Per charge key, the (quantity, amount) of usage that late-usage adjustments and
    their reversals have added to the period so far, cancelled ones excepted, whichever
    of the period's invoices (voided or not) they were recorded against."""
    rows = connection.exec_driver_sql(
        "SELECT a.charge, sum(a.quantity_delta), sum(a.amount_delta) FROM adjustments a "
        "JOIN invoices i ON i.id = a.original_invoice_id "
        "WHERE i.subscription_id = %(s)s AND i.period_start = %(start)s "
        "AND i.period_end = %(end)s AND a.kind IN ('late_usage', 'correction', 'reversal') "
        "AND a.charge IS NOT NULL AND a.cancelled_at IS NULL GROUP BY a.charge",
        {"s": subscription_id, "start": start, "end": end},
    )
    return {str(charge): (quantity, amount) for charge, quantity, amount in rows}


def adjustments_page(
    connection: Connection, *, customer_id: str, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """A customer's adjustments with the invoice that carried each (number, status)."""
    carrier = invoices.alias("carrier")
    query = select(
        adjustments,
        carrier.c.number.label("carried_by_number"),
        carrier.c.status.label("carried_by_status"),
    ).select_from(adjustments.outerjoin(carrier, carrier.c.id == adjustments.c.applied_invoice_id))
    query = query.where(adjustments.c.customer_id == customer_id)
    return keyset_page(connection, query, adjustments.c.id, after=after, limit=limit)


def customer_currencies_with_pending(connection: Connection, customer_id: str) -> list[str]:
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT currency FROM adjustments WHERE customer_id = %(c)s "
        "AND applied_invoice_id IS NULL AND cancelled_at IS NULL ORDER BY 1",
        {"c": customer_id},
    )
    return [str(currency) for (currency,) in rows]


def stranded_adjustments(
    connection: Connection, cutoff: datetime, limit: int
) -> list[tuple[str, str]]:
    """(customer, currency) whose pending adjustments add up to a charge, the oldest
    pending before `cutoff`, and that no subscription invoice will ever carry: the
    customer has no subscription in that currency still to be invoiced (one without an
    end, or whose final period has no binding invoice yet)."""
    rows = connection.exec_driver_sql(
        "SELECT a.customer_id, a.currency FROM adjustments a "
        "WHERE a.applied_invoice_id IS NULL AND a.cancelled_at IS NULL "
        "GROUP BY a.customer_id, a.currency "
        "HAVING sum(a.amount_delta) > 0 AND min(a.created_at) < %(cutoff)s "
        "AND NOT EXISTS (SELECT 1 FROM subscriptions s "
        "  JOIN plan_versions v ON v.plan_code = s.plan_code AND v.version = s.plan_version "
        "  WHERE s.customer_id = a.customer_id AND v.currency = a.currency AND ("
        "    s.ends_at IS NULL OR NOT EXISTS (SELECT 1 FROM invoices f "
        "      WHERE f.subscription_id = s.id AND f.period_end = s.ends_at "
        "      AND f.status = ANY(%(binding)s)))) "
        "ORDER BY 1, 2 LIMIT %(limit)s",
        {"cutoff": cutoff, "binding": list(BINDING), "limit": limit},
    )
    return [(str(customer), str(currency)) for customer, currency in rows]


def open_adjustments_draft(
    connection: Connection, customer_id: str, currency: str
) -> dict[str, Any] | None:
    row = connection.execute(
        select(invoices).where(
            invoices.c.customer_id == customer_id,
            invoices.c.currency == currency,
            invoices.c.kind == "adjustments",
            invoices.c.status == "draft",
        )
    ).one_or_none()
    return None if row is None else as_dict(row)


def drafts(connection: Connection, *, after: str | None, limit: int) -> list[str]:
    """Draft ids in id order (the billing tick refreshes them)."""
    query = select(invoices.c.id).where(invoices.c.status == "draft").order_by(invoices.c.id)
    if after is not None:
        query = query.where(invoices.c.id > after)
    return [str(row) for row in connection.execute(query.limit(limit)).scalars()]


def adjustments_of_correction(connection: Connection, correction_id: str) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(adjustments)
        .where(adjustments.c.correction_id == correction_id)
        .order_by(adjustments.c.created_at, adjustments.c.id)
    )
    return [as_dict(row) for row in rows]


def overlapping(
    connection: Connection, subscription_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The subscription's live (not voided) invoices whose period overlaps [start, end)."""
    rows = connection.execute(
        select(invoices)
        .where(
            invoices.c.subscription_id == subscription_id,
            invoices.c.period_start < end,
            invoices.c.period_end > start,
            invoices.c.status != "void",
        )
        .order_by(invoices.c.period_start, invoices.c.id)
    )
    return [as_dict(row) for row in rows]
