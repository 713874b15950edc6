"""Group commit mechanics with a stand-in writer (the real one is covered through HTTP by
tests/integration/test_ingest.py's 32 concurrent posts of one key)."""

import asyncio
import threading
import time

from core.services.group_commit import AsyncGroupCommit


def _gather(group, values):
    async def run():
        return await asyncio.gather(*(group.submit(v) for v in values), return_exceptions=True)

    return dict(zip(values, asyncio.run(run()), strict=True))


def test_async_requests_get_their_own_outcomes_and_one_group_is_written_at_a_time():
    groups, writing = [], threading.Lock()

    def write(raws):
        assert writing.acquire(blocking=False), "two groups were written at once"
        try:
            groups.append(list(raws))
            time.sleep(0.01)
            return [raw * 10 for raw in raws]
        finally:
            writing.release()

    group = AsyncGroupCommit(write, batch_max=8)
    assert _gather(group, list(range(40))) == {v: v * 10 for v in range(40)}
    assert sorted(v for g in groups for v in g) == list(range(40))  # each once
    assert max(len(g) for g in groups) <= 8
    assert len(groups) < 40  # they were grouped


def test_async_failure_of_a_group_reaches_every_request_in_it_and_the_next_group_works():
    calls, queued = [], threading.Event()

    def write(raws):
        calls.append(list(raws))
        if len(calls) == 1:
            queued.wait(5)  # the first group is being written while 2, 3, 4 queue
            return list(raws)
        if len(calls) == 2:
            raise RuntimeError("database gone")
        return list(raws)

    group = AsyncGroupCommit(write, batch_max=500)

    async def run():
        first = asyncio.ensure_future(group.submit(1))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(group.submit(v)) for v in (2, 3, 4)]
        await asyncio.sleep(0)
        queued.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    one, *failed = asyncio.run(run())
    assert one == 1
    assert calls[1] == [2, 3, 4]
    assert all(isinstance(r, RuntimeError) for r in failed), failed
    assert _gather(group, [5]) == {5: 5}


def test_async_requests_from_several_event_loops_share_the_groups():
    """Each thread runs its own event loop (as tests drive one process)."""
    seen = []

    def write(raws):
        seen.extend(raws)
        time.sleep(0.005)
        return [f"ok-{raw}" for raw in raws]

    group = AsyncGroupCommit(write)
    results, start = {}, threading.Barrier(8)

    def loop_thread(base):
        start.wait()
        results.update(_gather(group, [base * 10 + i for i in range(5)]))

    threads = [threading.Thread(target=loop_thread, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    expected = {n * 10 + i: f"ok-{n * 10 + i}" for n in range(8) for i in range(5)}
    assert results == expected
    assert sorted(seen) == sorted(expected)
