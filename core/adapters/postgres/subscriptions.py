"""Subscription rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import subscriptions


def insert_subscription(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    return as_dict(
        connection.execute(insert(subscriptions).values(values).returning(*subscriptions.c)).one()
    )


def get(
    connection: Connection, subscription_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    query = select(subscriptions).where(subscriptions.c.id == subscription_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).one_or_none()
    return None if row is None else as_dict(row)


def change(connection: Connection, subscription_id: str, values: dict[str, Any]) -> dict[str, Any]:
    statement = (
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id)
        .values(values)
        .returning(*subscriptions.c)
    )
    return as_dict(connection.execute(statement).one())


def page(
    connection: Connection, *, customer_id: str | None, after: str | None, limit: int
) -> list[dict[str, Any]]:
    query = select(subscriptions)
    if customer_id is not None:
        query = query.where(subscriptions.c.customer_id == customer_id)
    return keyset_page(connection, query, subscriptions.c.id, after=after, limit=limit)
