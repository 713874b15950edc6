"""Retention of the operational tables: idempotency records, the CloudEvent inbox,
finished jobs and dead letters are pruned by age (settings in core/config.py, reasoning in
docs/operations.md), a bounded batch per table per run, so a tick never holds a long
transaction and a backlog drains over a few ticks."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from core.adapters.postgres import retention as rows
from core.adapters.postgres.database import get_database
from core.config import settings

PRUNE_BATCH = 5000
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


def prune(now: datetime | None = None, *, batch: int = PRUNE_BATCH) -> dict[str, int]:
    """One bounded pass: at most `batch` rows of each table, each in its own transaction."""
    now = now or datetime.now(UTC)
    pruned: dict[str, int] = {}
    for target, before in horizons(now):
        with get_database().transaction() as connection:
            count = rows.prune(connection, target, before, batch)
        name = target.table if target.condition == "true" else f"{target.table}:{target.condition}"
        pruned[name] = count
    if any(pruned.values()):
        log.info("retention pruned", extra={"pruned": pruned})
    return pruned
