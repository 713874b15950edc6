"""The audit trail: one hash-chained row per mutation, in the mutation's own transaction."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres import audit as audit_rows
from core.adapters.postgres.database import get_database
from core.domain.audit import ChainBreak, verify_chain
from core.domain.canonical import sha256_of
from core.services.caller import Caller
from core.services.listing import paginate


def record(
    connection: Connection,
    caller: Caller,
    *,
    action: str,
    entity: str,
    entity_id: str,
    state: Any,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return audit_rows.append(
        connection,
        {
            "occurred_at": datetime.now(UTC),
            "actor": caller.actor,
            "action": action,
            "entity": entity,
            "entity_id": entity_id,
            "request_id": caller.request_id,
            "state_sha256": sha256_of(state),
            # The key is the actor; its team, when it has one, is named beside it (§18).
            "changes": changes if caller.team is None else {**(changes or {}), "team": caller.team},
        },
    )


@dataclass(frozen=True)
class ChainReport:
    rows_checked: int
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def verify() -> ChainReport:
    with (
        get_database().transaction() as connection,
        closing(audit_rows.iterate(connection)) as rows,
    ):
        checked, broken = verify_chain(rows)
    return ChainReport(checked, broken)


def list_entries(
    *, entity: str | None, entity_id: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        return paginate(
            lambda after, n: audit_rows.page(
                connection, entity=entity, entity_id=entity_id, after_id=after, limit=n
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )
