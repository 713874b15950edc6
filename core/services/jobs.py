"""Draining a queue: what a tick does, and what a notification speeds up."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.adapters import queue
from core.adapters.postgres.database import get_database

DRAIN_ROUNDS_MAX = 100


def drain(
    queue_name: str, handlers: Mapping[str, queue.JobHandler], *, batch: int = 50
) -> queue.WorkResult:
    """Run due jobs until none is left or DRAIN_ROUNDS_MAX batches ran (the next tick goes on)."""
    total = queue.WorkResult()
    for _ in range(DRAIN_ROUNDS_MAX):
        result = queue.work(get_database(), queue_name, handlers, limit=batch)
        total.add(result)
        if result.claimed == 0:
            break
    return total


def run_now(queue_name: str, handlers: Mapping[str, queue.JobHandler], dedupe_key: str) -> str:
    """Run one due job, named by its dedupe key, in this thread; what happened to it
    ("done", "retry", "dead"), or "none" when it is not due (already done, running
    elsewhere, or waiting for its retry)."""
    result = queue.work(get_database(), queue_name, handlers, limit=1, dedupe_key=dedupe_key)
    if result.claimed == 0:
        return "none"
    return "done" if result.done else "dead" if result.dead else "retry"


def drain_together(
    queue_name: str, kind: str, handler: queue.BatchHandler, *, batch: int = 200
) -> queue.WorkResult:
    """drain, with each claimed batch run by one call of a batch handler."""
    total = queue.WorkResult()
    for _ in range(DRAIN_ROUNDS_MAX):
        result = queue.work_together(get_database(), queue_name, kind, handler, limit=batch)
        total.add(result)
        if result.claimed == 0:
            break
    return total


@dataclass(frozen=True)
class NewJob:
    kind: str
    payload: dict[str, Any]
    dedupe_key: str | None = None
    max_attempts: int = queue.MAX_ATTEMPTS_DEFAULT


def enqueue_all(
    queue_name: str, new_jobs: Sequence[NewJob], *, on_commit: Callable[[], None] | None = None
) -> list[int | None]:
    """Enqueue several jobs in one transaction (the caller's, if one is open)."""
    database = get_database()
    with database.transaction() as connection:
        ids = [
            queue.enqueue(
                connection,
                queue_name,
                job.kind,
                job.payload,
                dedupe_key=job.dedupe_key,
                max_attempts=job.max_attempts,
            )
            for job in new_jobs
        ]
        if on_commit is not None:
            database.after_commit(on_commit)
    return ids


def work(
    queue_name: str, handlers: Mapping[str, queue.JobHandler], *, limit: int = 10
) -> queue.WorkResult:
    return queue.work(get_database(), queue_name, handlers, limit=limit)


def counts(queue_name: str) -> dict[str, int]:
    with get_database().transaction() as connection:
        return queue.counts(connection, queue_name)
