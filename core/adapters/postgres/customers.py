"""Customer rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import customers


def insert_customer(connection: Connection, values: dict[str, Any]) -> dict[str, Any] | None:
    """The new row, or None if the id exists already."""
    statement = pg_insert(customers).values(values).on_conflict_do_nothing().returning(*customers.c)
    row = connection.execute(statement).one_or_none()
    return None if row is None else as_dict(row)


def get(connection: Connection, customer_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(customers).where(customers.c.id == customer_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).one_or_none()
    return None if row is None else as_dict(row)


def change(connection: Connection, customer_id: str, values: dict[str, Any]) -> dict[str, Any]:
    statement = (
        update(customers)
        .where(customers.c.id == customer_id)
        .values(values)
        .returning(*customers.c)
    )
    return as_dict(connection.execute(statement).one())


def page(
    connection: Connection, *, after: str | None, limit: int, search: str | None = None
) -> list[dict[str, Any]]:
    """Customers by id; with `search`, those whose id or name contains it (any case)."""
    query = select(customers)
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(customers.c.id.ilike(pattern) | customers.c.name.ilike(pattern))
    return keyset_page(connection, query, customers.c.id, after=after, limit=limit)


def archive(connection: Connection, customer_id: str, at: datetime) -> None:
    connection.execute(
        update(customers)
        .where(customers.c.id == customer_id, customers.c.archived_at.is_(None))
        .values(archived_at=at, updated_at=at)
    )
