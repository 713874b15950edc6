"""Retention of the operational tables: idempotency records, the CloudEvent inbox,
finished jobs and dead letters are pruned by age (settings in core/config.py, reasoning in
docs/operations.md), a bounded batch per table per run, so a tick never holds a long
transaction and a backlog drains over a few ticks."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from core.adapters.postgres import retention as rows
from core.adapters.postgres.database import get_database
from core.config import settings

PRUNE_BATCH = 5000
PRUNE_ROUNDS_MAX = 20
PRUNE_BUDGET_SECONDS = 20.0
log = logging.getLogger(__name__)


def horizons(now: datetime) -> list[tuple[rows.Prunable, datetime]]:
    config = settings()
    return [
        (rows.IDEMPOTENCY, now - timedelta(hours=config.abaxus_idempotency_retention_hours)),
        (rows.INBOX, now - timedelta(hours=config.abaxus_inbox_retention_hours)),
        (rows.DONE_JOBS, now - timedelta(hours=config.abaxus_done_jobs_retention_hours)),
        (rows.DEAD_JOBS, now - timedelta(days=config.abaxus_dead_jobs_retention_days)),
        (rows.DEAD_LETTERS, now - timedelta(days=config.abaxus_dead_letter_retention_days)),
    ]


def prune(
    now: datetime | None = None,
    *,
    batch: int = PRUNE_BATCH,
    rounds: int = PRUNE_ROUNDS_MAX,
    budget_seconds: float = PRUNE_BUDGET_SECONDS,
) -> dict[str, int]:
    """One bounded pass: per table, batches of at most `batch` rows, each in its own short
    transaction, while a batch comes back full — at most `rounds` batches per table and
    `budget_seconds` for the whole pass, so a tick keeps up with a busy system (100,000 rows
    per table per tick by default) and drains a backlog over a few ticks."""
    now = now or datetime.now(UTC)
    deadline = time.monotonic() + budget_seconds
    pruned: dict[str, int] = {}
    for target, before in horizons(now):
        count = 0
        for _ in range(rounds):
            with get_database().transaction() as connection:
                deleted = rows.prune(connection, target, before, batch)
            count += deleted
            if deleted < batch or time.monotonic() > deadline:
                break
        name = target.table if target.condition == "true" else f"{target.table}:{target.condition}"
        pruned[name] = count
    if any(pruned.values()):
        log.info("retention pruned", extra={"pruned": pruned})
    return pruned
