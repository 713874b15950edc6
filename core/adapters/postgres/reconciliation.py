"""What parity reads of invoices: a customer's invoices for one period and the usage
adjustments recorded against them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection


def period_invoices(
    connection: Connection, customer_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Live invoices (not void) of the customer for exactly this period, binding first."""
    rows = connection.exec_driver_sql(
        "SELECT id, number, status, lines FROM invoices WHERE customer_id = %(c)s "
        "AND kind = 'subscription' AND period_start = %(s)s AND period_end = %(e)s "
        "AND status <> 'void' ORDER BY (status = 'draft'), created_at",
        {"c": customer_id, "s": start, "e": end},
    )
    return [dict(row._mapping) for row in rows]


def period_adjustments(connection: Connection, invoice_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Late usage and reversals standing against these invoices (not cancelled)."""
    if not invoice_ids:
        return []
    rows = connection.exec_driver_sql(
        "SELECT a.id, a.kind, a.metric_key, a.quantity_delta, a.applied_invoice_id, "
        "c.number AS carried_by_number FROM adjustments a "
        "LEFT JOIN invoices c ON c.id = a.applied_invoice_id "
        "WHERE a.original_invoice_id = ANY(%(ids)s) AND a.kind IN ('late_usage', 'reversal') "
        "AND a.cancelled_at IS NULL ORDER BY a.created_at, a.id",
        {"ids": list(invoice_ids)},
    )
    return [dict(row._mapping) for row in rows]
