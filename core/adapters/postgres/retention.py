"""Pruning operational tables by age, a bounded batch per statement (oldest first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection


@dataclass(frozen=True)
class Prunable:
    table: str
    age_column: str
    condition: str = "true"
    # An append-only table whose trigger lets only the pruner delete (migration 0013).
    gated: bool = False


IDEMPOTENCY = Prunable("idempotency_records", "created_at")
INBOX = Prunable("cloudevent_inbox", "received_at")
DONE_JOBS = Prunable("jobs", "finished_at", "status = 'done'")
DEAD_JOBS = Prunable("jobs", "finished_at", "status = 'dead'")
DEAD_LETTERS = Prunable("dead_letters", "received_at", gated=True)


def prune(connection: Connection, target: Prunable, before: datetime, limit: int) -> int:
    """Delete up to `limit` rows of `target` older than `before`; how many went."""
    if target.gated:
        connection.exec_driver_sql(f"SET LOCAL abaxus.prune = '{target.table}'")
    result = connection.exec_driver_sql(
        f"DELETE FROM {target.table} WHERE ctid IN (SELECT ctid FROM {target.table} "  # noqa: S608 - fixed names
        f"WHERE {target.age_column} < %(before)s AND {target.condition} "
        f"ORDER BY {target.age_column} LIMIT %(limit)s)",
        {"before": before, "limit": limit},
    )
    if target.gated:
        connection.exec_driver_sql("SET LOCAL abaxus.prune = ''")
    return int(result.rowcount)


def size(connection: Connection, table: str) -> int:
    return int(connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())  # noqa: S608
