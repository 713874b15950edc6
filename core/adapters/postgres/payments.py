"""Payment attempts, read with the customer of the invoice they are for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, select

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import invoices, payments

STATUSES = ("pending", "awaiting", "succeeded", "failed")


def _with_customer() -> Select[Any]:
    return select(payments, invoices.c.customer_id).join(
        invoices, invoices.c.id == payments.c.invoice_id
    )


def get(connection: Connection, payment_id: str) -> dict[str, Any] | None:
    row = connection.execute(_with_customer().where(payments.c.id == payment_id)).one_or_none()
    return None if row is None else as_dict(row)


def page(
    connection: Connection,
    *,
    customer_id: str | None,
    invoice_id: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = _with_customer()
    if customer_id is not None:
        query = query.where(invoices.c.customer_id == customer_id)
    if invoice_id is not None:
        query = query.where(payments.c.invoice_id == invoice_id)
    if status is not None:
        query = query.where(payments.c.status == status)
    return keyset_page(connection, query, payments.c.id, after=after, limit=limit)
