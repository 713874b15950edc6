"""Audit log rows, appended under a transaction-scoped advisory lock so the chain is linear."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from sqlalchemy import Connection, insert, select, text

from core.adapters.postgres.tables import audit_log
from core.domain.audit import GENESIS_SHA256, row_sha256

AUDIT_CHAIN_LOCK_KEY = 0x0ABA_0002
VERIFY_FETCH_ROWS = 1000


def append(connection: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """Append one row to the chain in the caller's transaction (held until it commits)."""
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_CHAIN_LOCK_KEY})
    previous = connection.execute(
        select(audit_log.c.row_sha256).order_by(audit_log.c.id.desc()).limit(1)
    ).scalar_one_or_none()
    prev_sha256 = previous or GENESIS_SHA256
    values = {**row, "prev_sha256": prev_sha256, "row_sha256": row_sha256(prev_sha256, row)}
    inserted = connection.execute(insert(audit_log).values(values).returning(*audit_log.c)).one()
    return dict(inserted._mapping)


def iterate(connection: Connection) -> Generator[dict[str, Any], None, None]:
    """Every row in chain order, streamed (server-side cursor), memory flat."""
    result = connection.execution_options(yield_per=VERIFY_FETCH_ROWS).execute(
        select(audit_log).order_by(audit_log.c.id)
    )
    try:
        for row in result:
            yield dict(row._mapping)
    finally:
        result.close()  # the server-side cursor, also when the caller stops early


def page(
    connection: Connection,
    *,
    entity: str | None,
    entity_id: str | None,
    after_id: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    query = select(audit_log).order_by(audit_log.c.id).limit(limit)
    if entity is not None:
        query = query.where(audit_log.c.entity == entity)
    if entity_id is not None:
        query = query.where(audit_log.c.entity_id == entity_id)
    if after_id is not None:
        query = query.where(audit_log.c.id > after_id)
    return [dict(row._mapping) for row in connection.execute(query).all()]
