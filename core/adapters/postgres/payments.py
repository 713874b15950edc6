"""Payment attempts, read with the customer of the invoice they are for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, func, select, update
from sqlalchemy.dialects.postgresql import insert

from core.adapters.postgres.database import get_database
from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import invoices, payments
from core.domain.payments import PaymentStatus


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


def attempts(connection: Connection, invoice_id: str) -> int:
    """How many attempts the invoice has had (the next one is this + 1)."""
    return int(
        connection.execute(
            select(func.count()).select_from(payments).where(payments.c.invoice_id == invoice_id)
        ).scalar_one()
    )


def record_pending(values: dict[str, Any]) -> dict[str, Any]:
    """Commit an attempt's payment row (and its key) before the provider is called, on a
    connection of its own; an existing row (a retry after a crash) is returned as it is."""
    with get_database().maintenance_engine.begin() as connection:
        connection.execute(
            insert(payments)
            .values(values)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
        row = connection.execute(
            select(payments).where(payments.c.idempotency_key == values["idempotency_key"])
        ).one()
        return as_dict(row)


def settle(
    connection: Connection,
    payment_id: str,
    *,
    status: str,
    provider_id: str | None,
    error: str | None,
    at: datetime,
) -> None:
    connection.execute(
        update(payments)
        .where(payments.c.id == payment_id)
        .values(status=status, provider_id=provider_id, error=error, updated_at=at)
    )


def open_attempt(connection: Connection, invoice_id: str) -> dict[str, Any] | None:
    """The invoice's attempt still waiting to be settled (pending or awaiting), if any."""
    row = connection.execute(
        select(payments).where(
            payments.c.invoice_id == invoice_id,
            payments.c.status.in_([PaymentStatus.AWAITING.value, PaymentStatus.PENDING.value]),
        )
    ).first()
    return None if row is None else as_dict(row)


def insert_attempt(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    row = connection.execute(payments.insert().values(values).returning(payments)).one()
    return as_dict(row)


def set_reference(connection: Connection, payment_id: str, reference: str) -> None:
    connection.execute(
        update(payments).where(payments.c.id == payment_id).values(reference=reference)
    )


def by_provider_id(connection: Connection, provider_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(payments).where(payments.c.provider_id == provider_id)).first()
    return None if row is None else as_dict(row)
