"""The job queue on real PostgreSQL: claim, complete-with-effects, retry, dead, concurrency."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from core.adapters import queue
from core.adapters.postgres.database import get_database
from core.observability import jobs_finished


def _enqueue(count=1, **kwargs):
    with get_database().transaction() as connection:
        return [queue.enqueue(connection, "test", "work", {"n": n}, **kwargs) for n in range(count)]


def _job(job_id):
    with get_database().transaction() as connection:
        return connection.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).one()


def test_enqueue_is_part_of_the_callers_transaction(db):
    database = get_database()
    with pytest.raises(RuntimeError), database.transaction() as connection:
        queue.enqueue(connection, "test", "work", {})
        raise RuntimeError("caller rolls back")
    with database.transaction() as connection:
        assert queue.counts(connection, "test") == {"pending": 0, "done": 0, "dead": 0}


def test_a_done_job_commits_with_its_effects(db):
    (job_id,) = _enqueue()
    with get_database().transaction() as connection:
        connection.execute(text("CREATE TABLE effects (job_id bigint)"))

    def handler(job):
        with get_database().transaction() as connection:
            connection.execute(text("INSERT INTO effects VALUES (:id)"), {"id": job.id})

    result = queue.work(get_database(), "test", {"work": handler})
    assert (result.claimed, result.done) == (1, 1)
    row = _job(job_id)
    assert (row.status, row.attempts, row.finished_at is not None) == ("done", 1, True)
    with get_database().transaction() as connection:
        assert connection.execute(text("SELECT job_id FROM effects")).scalars().all() == [job_id]
        connection.execute(text("DROP TABLE effects"))
    assert queue.work(get_database(), "test", {"work": handler}).claimed == 0


def test_a_failing_job_keeps_no_effects_and_retries_after_backoff(db):
    (job_id,) = _enqueue()
    now = datetime(2030, 1, 1, tzinfo=UTC)
    with get_database().transaction() as connection:
        connection.execute(text("CREATE TABLE effects (job_id bigint)"))

    def handler(job):
        with get_database().transaction() as connection:
            connection.execute(text("INSERT INTO effects VALUES (:id)"), {"id": job.id})
        raise ValueError("downstream broke")

    result = queue.work(get_database(), "test", {"work": handler}, now=now)
    assert (result.claimed, result.retried) == (1, 1)
    row = _job(job_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "downstream broke" in row.last_error
    assert row.run_after == now + timedelta(seconds=1)
    with get_database().transaction() as connection:
        assert connection.execute(text("SELECT count(*) FROM effects")).scalar() == 0
        connection.execute(text("DROP TABLE effects"))
    # not due before the backoff has passed, due after
    assert queue.work(get_database(), "test", {"work": handler}, now=now).claimed == 0
    later = now + timedelta(seconds=1)
    assert queue.work(get_database(), "test", {"work": lambda job: None}, now=later).done == 1


def test_after_max_attempts_a_job_is_dead_kept_and_counted(db):
    (job_id,) = _enqueue(max_attempts=3)
    dead_before = jobs_finished.labels("test", "work", "dead")._value.get()

    def handler(job):
        raise RuntimeError("always fails")

    now = datetime(2030, 1, 1, tzinfo=UTC)
    outcomes = []
    for step in range(5):
        result = queue.work(
            get_database(), "test", {"work": handler}, now=now + timedelta(hours=step)
        )
        outcomes.append((result.claimed, result.retried, result.dead))
    assert outcomes == [(1, 1, 0), (1, 1, 0), (1, 0, 1), (0, 0, 0), (0, 0, 0)]
    row = _job(job_id)
    assert (row.status, row.attempts) == ("dead", 3)
    assert "always fails" in row.last_error
    assert jobs_finished.labels("test", "work", "dead")._value.get() == dead_before + 1


def test_a_worker_claims_only_the_kinds_it_can_run_and_leaves_the_rest(db):
    (job_id,) = _enqueue(max_attempts=1)
    assert queue.work(get_database(), "test", {}).claimed == 0
    assert queue.work(get_database(), "test", {"other": lambda job: None}).claimed == 0
    row = _job(job_id)
    assert (row.status, row.attempts) == ("pending", 0)
    assert queue.work(get_database(), "test", {"work": lambda job: None}).done == 1


def test_dedupe_key_makes_a_second_enqueue_a_no_op(db):
    first = _enqueue(dedupe_key="tick-1")
    second = _enqueue(dedupe_key="tick-1")
    assert first[0] is not None and second == [None]


def test_two_concurrent_workers_never_claim_the_same_job(db):
    _enqueue(count=60)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def worker(name):
        start.wait()
        while True:

            def handler(job, name=name):
                seen[name].append(job.id)
                threading.Event().wait(0.002)  # hold the claim a moment

            if queue.work(get_database(), "test", {"work": handler}, limit=3).claimed == 0:
                return

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    both = seen["a"] + seen["b"]
    assert len(both) == 60 and len(set(both)) == 60
    assert seen["a"] and seen["b"], "both workers should have claimed work"
    with get_database().transaction() as connection:
        assert queue.counts(connection, "test") == {"pending": 0, "done": 60, "dead": 0}
