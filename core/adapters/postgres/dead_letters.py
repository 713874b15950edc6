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


def get(connection: Connection, dead_letter_id: int) -> dict[str, Any] | None:
    row = connection.execute(
        select(dead_letters).where(dead_letters.c.id == dead_letter_id)
    ).one_or_none()
    return None if row is None else dict(row._mapping)


def record_redelivery(connection: Connection, dead_letter_id: int, actor: str) -> None:
    connection.exec_driver_sql(
        "INSERT INTO dead_letter_redeliveries (dead_letter_id, actor) VALUES (%(d)s, %(a)s)",
        {"d": dead_letter_id, "a": actor},
    )


def last_redeliveries(connection: Connection, ids: list[int]) -> dict[int, Any]:
    rows = connection.exec_driver_sql(
        "SELECT dead_letter_id, max(redelivered_at) FROM dead_letter_redeliveries "
        "WHERE dead_letter_id = ANY(%(ids)s) GROUP BY 1",
        {"ids": ids},
    )
    return {int(letter): at for letter, at in rows}
