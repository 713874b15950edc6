"""Soft delete, the same way for every catalog entity: lock the row, set archived_at once,
write one audit row; archiving twice returns the archived entity and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres.database import get_database
from core.domain.errors import NotFound
from core.services import audit
from core.services.caller import Caller


def archive(
    caller: Caller,
    *,
    entity: str,
    entity_id: str,
    lock: Callable[[Connection], dict[str, Any] | None],
    mark: Callable[[Connection, datetime], None],
    load: Callable[[Connection], dict[str, Any]],
) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = lock(connection)
        if row is None:
            raise NotFound(f"no {entity.replace('_', ' ')} {entity_id!r}")
        if row["archived_at"] is not None:
            return load(connection)
        mark(connection, datetime.now(UTC))
        result = load(connection)
        audit.record(
            connection,
            caller,
            action=f"{entity}.archived",
            entity=entity,
            entity_id=entity_id,
            state=result,
        )
    return result
