"""API key rows. Only the SHA-256 of a secret is stored; the prefix narrows the lookup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from core.adapters.postgres.database import driver_rows
from core.adapters.postgres.tables import api_keys


def insert_key(
    connection: Connection,
    *,
    key_id: str,
    name: str,
    scopes: Sequence[str],
    prefix: str,
    secret_sha256: str,
    created_at: datetime,
    team: str | None = None,
) -> dict[str, Any]:
    row = connection.execute(
        insert(api_keys)
        .values(
            id=key_id,
            name=name,
            scopes=list(scopes),
            prefix=prefix,
            secret_sha256=secret_sha256,
            created_at=created_at,
            team=team,
        )
        .returning(*api_keys.c)
    ).one()
    return dict(row._mapping)


_COLUMNS = tuple(c.name for c in api_keys.c)
_BY_PREFIXES = (
    f"SELECT {', '.join(_COLUMNS)} FROM api_keys "  # noqa: S608 - the table's own columns
    "WHERE prefix = ANY(%(prefixes)s)"
)


def find_by_prefixes(connection: Connection, prefixes: Sequence[str]) -> list[dict[str, Any]]:
    """Constant SQL run by psycopg itself (`driver_rows`): every authenticated request and
    every group commit of single events runs it."""
    rows = driver_rows(connection, _BY_PREFIXES, {"prefixes": list(prefixes)})
    return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]


def find_by_prefix(connection: Connection, prefix: str) -> list[dict[str, Any]]:
    return find_by_prefixes(connection, [prefix])


def find_by_hash(connection: Connection, secret_sha256: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(api_keys).where(api_keys.c.secret_sha256 == secret_sha256)
    ).one_or_none()
    return None if row is None else dict(row._mapping)


def get(connection: Connection, key_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).one_or_none()
    return None if row is None else dict(row._mapping)


def page(connection: Connection, *, after_id: str | None, limit: int) -> list[dict[str, Any]]:
    query = select(api_keys).order_by(api_keys.c.id).limit(limit)
    if after_id is not None:
        query = query.where(api_keys.c.id > after_id)
    return [dict(row._mapping) for row in connection.execute(query).all()]


def count_active(connection: Connection) -> int:
    query = select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
    return int(connection.execute(query).scalar_one())


def revoke(connection: Connection, key_id: str, at: datetime) -> dict[str, Any] | None:
    """Set revoked_at once; a second revoke keeps the first instant."""
    connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return get(connection, key_id)
