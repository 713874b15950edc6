"""Small helpers shared by the row modules: keyset pages and mapping rows to dicts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection, Select


def as_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def keyset_page(
    connection: Connection, query: Select[Any], key: Column[Any], *, after: Any, limit: int
) -> list[dict[str, Any]]:
    """Rows ordered by `key`, strictly after `after`, at most `limit`."""
    query = query.order_by(key).limit(limit)
    if after is not None:
        query = query.where(key > after)
    return [as_dict(row) for row in connection.execute(query).all()]
