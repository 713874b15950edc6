"""The aggregator: folds the events of ingestion jobs into hourly rollups, in the
transaction that marks the jobs done (so each event is folded exactly once, whatever the
number of replicas and however often `events.ingested` is delivered), and rebuilds a
metric's rollups when a new meter version changes what counts from some instant on."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.adapters import queue
from core.adapters.postgres import regions as region_rows
from core.adapters.postgres import rollups
from core.adapters.postgres import stats as stats_rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.observability import events_folded, fold_duration
from core.services import jobs, regions
from core.services.invoicing import adjustments
from core.services.usage import AGGREGATE_QUEUE, FOLD_JOB, REFOLD_JOB, meter_versions

__all__ = ["AGGREGATE_QUEUE", "FOLD_JOB", "REFOLD_JOB", "drain", "request_refold"]
FOLD_BATCH = 200

log = logging.getLogger(__name__)


def fold_jobs(claimed: Sequence[queue.Job]) -> None:
    """Fold the events of these ingestion jobs (a batch handler: one statement per
    metric version for the whole batch)."""
    started = time.perf_counter()
    job_ids = [job.id for job in claimed]
    with get_database().transaction() as connection:
        keys = rollups.job_metric_keys(connection, job_ids)
        rollups.lock_metrics(connection, keys, exclusive=False)
        # At a central: of the copies of a key accepted in several regions, one counts.
        replicated = region_rows.replicated_jobs(connection, job_ids)
        regions.settle_duplicates(connection, replicated)
        for key in keys:
            rollups.fold_jobs(connection, key, meter_versions(connection, key), job_ids)
        region_rows.count_folded(connection, job_ids, replicated, settings().abaxus_region)
        stats_rows.count_folded_jobs(connection, job_ids)  # the overview's events per minute
        # Events in periods already invoiced become adjustments, in this same commit.
        adjustments.record_late_usage(connection, job_ids)
    events_folded.inc(sum(int(job.payload.get("events", 0)) for job in claimed))
    fold_duration.observe(time.perf_counter() - started)


def refold_metric(job: queue.Job) -> None:
    """Rebuild a metric's rollups from payload["since"] on (a version was added)."""
    key = str(job.payload["metric_key"])
    since = datetime.fromisoformat(str(job.payload["since"]))
    with get_database().transaction() as connection:
        rollups.lock_metrics(connection, [key], exclusive=True)
        rollups.refold(
            connection,
            key,
            meter_versions(connection, key),
            since=since,
            fold_queue=AGGREGATE_QUEUE,
            fold_kind=FOLD_JOB,
        )
    log.info("rollups rebuilt", extra={"metric_key": key, "since": since.isoformat()})


def request_refold(connection: Any, metric_key: str, since: datetime) -> None:
    """In the caller's transaction (the one adding a metric version)."""
    queue.enqueue(
        connection,
        AGGREGATE_QUEUE,
        REFOLD_JOB,
        {"metric_key": metric_key, "since": since.isoformat()},
    )


def drain(batch: int = FOLD_BATCH) -> queue.WorkResult:
    """Fold every due ingestion job, then run due refolds (each alone: it locks its
    metric exclusively)."""
    result = jobs.drain_together(AGGREGATE_QUEUE, FOLD_JOB, fold_jobs, batch=batch)
    result.add(
        jobs.drain(
            AGGREGATE_QUEUE,
            {REFOLD_JOB: refold_metric, regions.REGION_SWAP_JOB: regions.refold_displaced},
            batch=1,
        )
    )
    return result
