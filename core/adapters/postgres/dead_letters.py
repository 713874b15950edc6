"""Dead-letter rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from core.adapters.postgres.rows import keyset_page
from core.adapters.postgres.tables import dead_letters


def keep(connection: Connection, values: dict[str, Any]) -> bool:
    """Store a dead letter; False if the same (source, id, type) is kept already."""
    statement = (
        insert(dead_letters).values(values).on_conflict_do_nothing().returning(dead_letters.c.id)
    )
    return connection.execute(statement).scalar_one_or_none() is not None


def page(
    connection: Connection, *, ce_type: str | None, after: int | None, limit: int
) -> list[dict[str, Any]]:
    query = select(dead_letters)
    if ce_type is not None:
        query = query.where(dead_letters.c.ce_type == ce_type)
    return keyset_page(connection, query, dead_letters.c.id, after=after, limit=limit)
