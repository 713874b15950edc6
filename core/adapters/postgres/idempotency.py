"""Stored responses for the Idempotency-Key header."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, insert, select, text

from core.adapters.postgres.tables import idempotency_records


def try_lock(connection: Connection, api_key_id: str, key: str) -> bool:
    """Transaction-scoped lock on (api key, idempotency key): False while another request
    with the same pair is in flight."""
    digest = hashlib.sha256(f"{api_key_id}\x00{key}".encode()).digest()
    lock_key = int.from_bytes(digest[:8], "big", signed=True)
    return bool(
        connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key}
        ).scalar_one()
    )


def find(connection: Connection, api_key_id: str, key: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(idempotency_records).where(
            idempotency_records.c.api_key_id == api_key_id, idempotency_records.c.key == key
        )
    ).one_or_none()
    return None if row is None else dict(row._mapping)


def store(connection: Connection, record: dict[str, Any]) -> None:
    connection.execute(insert(idempotency_records).values(record))
