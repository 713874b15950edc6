"""The job queue, on PostgreSQL.

- `enqueue` writes inside the caller's transaction, so a job exists iff the work that
  asked for it committed.
- `work` claims due jobs with `FOR UPDATE SKIP LOCKED` and runs each handler inside the
  claiming transaction (a SAVEPOINT per job), so a job is marked done in the same commit as
  its effects: it is never done twice and never lost. A worker that dies mid-job leaves the
  job pending (its row lock goes with its connection) for the next claim.
- A failing job is retried with bounded exponential backoff; after `max_attempts` it is
  marked `dead`: kept, logged and counted, never dropped.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, DateTime, func, literal, select, update

from core.adapters.postgres.database import Database
from core.adapters.postgres.tables import jobs
from core.domain.canonical import canonical_json
from core.observability import jobs_finished

log = logging.getLogger(__name__)

MAX_ATTEMPTS_DEFAULT = 8
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 600.0
CLAIM_BATCH_MAX = 500
ERROR_TEXT_CHARS_MAX = 4000


@dataclass(frozen=True)
class Job:
    id: int
    queue: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


@dataclass
class WorkResult:
    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0

    def record(self, outcome: str) -> None:
        if outcome == "done":
            self.done += 1
        elif outcome == "retry":
            self.retried += 1
        else:
            self.dead += 1

    def add(self, other: WorkResult) -> None:
        self.claimed += other.claimed
        self.done += other.done
        self.retried += other.retried
        self.dead += other.dead


# A handler joins the claiming transaction by opening `get_database().transaction()`
# (it becomes a savepoint of the claim), so its effects commit with the job's completion.
JobHandler = Callable[[Job], None]


class RetryLater(Exception):
    """Raised by a handler to fail this attempt and choose the delay before the next one
    (the local broker follows a Trigger's backoff policy this way)."""

    def __init__(self, reason: str, delay: timedelta) -> None:
        super().__init__(reason)
        self.delay = delay


class GiveUp(Exception):
    """Raised by a handler when retrying can never succeed: the job is dead at once."""


def backoff(attempt: int, base_seconds: float = BACKOFF_BASE_SECONDS) -> timedelta:
    """Delay before retry number `attempt` (1-based): base * 2^(attempt-1), capped."""
    exponent = min(max(attempt - 1, 0), 30)
    return timedelta(seconds=min(base_seconds * (2**exponent), BACKOFF_MAX_SECONDS))


def enqueue(
    connection: Connection,
    queue: str,
    kind: str,
    payload: Mapping[str, Any] | None = None,
    *,
    dedupe_key: str | None = None,
    run_after: datetime | None = None,
    max_attempts: int = MAX_ATTEMPTS_DEFAULT,
) -> int | None:
    """Add a job in the caller's transaction. With a `dedupe_key`, a second enqueue of the
    same key in the same queue is a no-op and returns None. Constant SQL at the driver:
    ingestion enqueues one job per transaction, and a compiled Core insert cost about as
    much CPU as all of a small group's event statements together."""
    row = connection.exec_driver_sql(
        _ENQUEUE if dedupe_key is None else _ENQUEUE_DEDUPED,
        {
            "queue": queue,
            "kind": kind,
            "payload": canonical_json(dict(payload or {})).decode("utf-8"),
            "dedupe_key": dedupe_key,
            "max_attempts": max_attempts,
            "run_after": run_after,
        },
    ).first()
    return None if row is None else int(row[0])


_INSERT_JOB = (
    "INSERT INTO jobs (queue, kind, payload, dedupe_key, max_attempts, run_after) "
    "VALUES (%(queue)s, %(kind)s, %(payload)s::jsonb, %(dedupe_key)s, %(max_attempts)s, "
    "COALESCE(%(run_after)s::timestamptz, now())) "
)
_ENQUEUE = _INSERT_JOB + "RETURNING id"
_ENQUEUE_DEDUPED = _INSERT_JOB + "ON CONFLICT (queue, dedupe_key) DO NOTHING RETURNING id"


@dataclass(frozen=True)
class CountedJob:
    """One job enqueued inside another statement (a data-modifying CTE), whose payload
    counts the rows of a CTE of that statement and which exists only when there are any:
    a hand-off recorded in the same statement as the rows it hands off."""

    queue: str
    kind: str
    count_key: str
    max_attempts: int = MAX_ATTEMPTS_DEFAULT

    def sql(self, rows_cte: str) -> str:
        """The INSERT ... RETURNING id to place in a WITH clause beside `rows_cte`."""
        return (
            "INSERT INTO jobs (queue, kind, payload, max_attempts) "  # noqa: S608 - rows_cte is the caller's CTE name
            "SELECT %(job_queue)s, %(job_kind)s, jsonb_build_object(%(job_count_key)s::text, "
            f"count(*)), %(job_max_attempts)s FROM {rows_cte} HAVING count(*) > 0 RETURNING id"
        )

    def params(self) -> dict[str, Any]:
        return {
            "job_queue": self.queue,
            "job_kind": self.kind,
            "job_count_key": self.count_key,
            "job_max_attempts": self.max_attempts,
        }


def bring_forward(connection: Connection, queue: str, dedupe_key: str) -> bool:
    """Make a pending job that is scheduled later due now (an operator's retry). True if
    one was moved."""
    moved = connection.execute(
        update(jobs)
        .where(
            jobs.c.queue == queue,
            jobs.c.dedupe_key == dedupe_key,
            jobs.c.status == "pending",
            jobs.c.run_after > func.now(),
        )
        .values(run_after=func.now())
        .returning(jobs.c.id)
    ).first()
    return moved is not None


def _now(now: datetime | None) -> ColumnElement[Any]:
    return func.now() if now is None else literal(now, DateTime(timezone=True))


def claim(
    connection: Connection,
    queue: str,
    *,
    limit: int,
    kinds: Sequence[str],
    now: datetime | None = None,
    dedupe_key: str | None = None,
) -> list[Job]:
    """Lock up to `limit` due pending jobs of `kinds` that no other transaction holds
    (with `dedupe_key`: only that job). A worker claims only what it can run: other kinds
    wait for a worker that can."""
    limit = max(1, min(limit, CLAIM_BATCH_MAX))
    if not kinds:
        return []
    query = select(jobs).where(
        jobs.c.queue == queue,
        jobs.c.status == "pending",
        jobs.c.run_after <= _now(now),
        jobs.c.kind.in_(list(kinds)),
    )
    if dedupe_key is not None:
        query = query.where(jobs.c.dedupe_key == dedupe_key)
    rows = connection.execute(
        query.order_by(jobs.c.run_after, jobs.c.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    return [Job(r.id, r.queue, r.kind, dict(r.payload), r.attempts, r.max_attempts) for r in rows]


def _complete(connection: Connection, job: Job, now: datetime | None) -> None:
    _complete_all(connection, [job], now)


def _complete_all(connection: Connection, done: Sequence[Job], now: datetime | None) -> None:
    connection.execute(
        update(jobs)
        .where(jobs.c.id.in_([job.id for job in done]))
        .values(
            status="done",
            attempts=jobs.c.attempts + 1,
            finished_at=_now(now),
            updated_at=_now(now),
            last_error=None,
        )
    )


def _fail(
    connection: Connection,
    job: Job,
    error: str,
    now: datetime | None,
    delay: timedelta | None = None,
    *,
    final: bool = False,
) -> str:
    attempt = job.attempts + 1
    error = error[-ERROR_TEXT_CHARS_MAX:]
    if final or attempt >= job.max_attempts:
        connection.execute(
            update(jobs)
            .where(jobs.c.id == job.id)
            .values(
                status="dead",
                attempts=attempt,
                last_error=error,
                finished_at=_now(now),
                updated_at=_now(now),
            )
        )
        log.error(
            "job dead after %d attempts",
            attempt,
            extra={"job_id": job.id, "queue": job.queue, "kind": job.kind, "error": error},
        )
        return "dead"
    connection.execute(
        update(jobs)
        .where(jobs.c.id == job.id)
        .values(
            attempts=attempt,
            last_error=error,
            run_after=_now(now) + (backoff(attempt) if delay is None else delay),
            updated_at=_now(now),
        )
    )
    log.warning(
        "job failed, will retry",
        extra={"job_id": job.id, "queue": job.queue, "kind": job.kind, "attempt": attempt},
    )
    return "retry"


def _run(
    database: Database, connection: Connection, job: Job, handler: JobHandler, now: datetime | None
) -> str:
    try:
        with database.savepoint():
            handler(job)
    except RetryLater as retry:
        outcome = _fail(connection, job, str(retry), now, retry.delay)
    except GiveUp as reason:
        outcome = _fail(connection, job, str(reason), now, final=True)
    # The worker is the outermost boundary of a job: every failure is recorded on it.
    except Exception:
        outcome = _fail(connection, job, traceback.format_exc(), now)
    else:
        _complete(connection, job, now)
        outcome = "done"
    jobs_finished.labels(job.queue, job.kind, outcome).inc()
    return outcome


def work(
    database: Database,
    queue: str,
    handlers: Mapping[str, JobHandler],
    *,
    limit: int = 10,
    now: datetime | None = None,
    dedupe_key: str | None = None,
) -> WorkResult:
    """Claim and run one batch of due jobs (or the one with `dedupe_key`); returns what
    happened to them."""
    result = WorkResult()
    with database.transaction() as connection:
        claimed = claim(
            connection, queue, limit=limit, kinds=sorted(handlers), now=now, dedupe_key=dedupe_key
        )
        result.claimed = len(claimed)
        for job in claimed:
            result.record(_run(database, connection, job, handlers[job.kind], now))
    return result


BatchHandler = Callable[[Sequence[Job]], None]


def work_together(
    database: Database,
    queue: str,
    kind: str,
    handler: BatchHandler,
    *,
    limit: int = 100,
    now: datetime | None = None,
) -> WorkResult:
    """Claim up to `limit` due jobs of one kind and run them in one call of `handler`
    (one set of statements for all of them), completing them in the same commit. If the
    batch fails, each job runs alone, so one bad job fails only itself."""
    result = WorkResult()
    with database.transaction() as connection:
        claimed = claim(connection, queue, limit=limit, kinds=[kind], now=now)
        result.claimed = len(claimed)
        if not claimed:
            return result
        try:
            with database.savepoint():
                handler(claimed)
        except Exception:
            log.warning(
                "batch of %d jobs failed; running them one by one",
                len(claimed),
                exc_info=True,
                extra={"queue": queue, "kind": kind},
            )
            for job in claimed:
                result.record(_run(database, connection, job, lambda one: handler([one]), now))
            return result
        _complete_all(connection, claimed, now)
        result.done = len(claimed)
        jobs_finished.labels(queue, kind, "done").inc(len(claimed))
    return result


def counts(connection: Connection, queue: str) -> dict[str, int]:
    rows = connection.execute(
        select(jobs.c.status, func.count()).where(jobs.c.queue == queue).group_by(jobs.c.status)
    ).all()
    found = {status: int(count) for status, count in rows}
    return {status: found.get(status, 0) for status in ("pending", "done", "dead")}
