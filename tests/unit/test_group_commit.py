"""Group commit mechanics with a stand-in writer (the real one is covered through HTTP by
tests/integration/test_ingest.py's 32 concurrent posts of one key)."""

import threading
import time

import pytest

from core.services.group_commit import GroupCommit


def _run_concurrently(group, values):
    results, start = {}, threading.Barrier(len(values))

    def submit(value):
        start.wait()
        try:
            results[value] = group.submit(value)
        except Exception as error:  # collected and asserted
            results[value] = error

    threads = [threading.Thread(target=submit, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_every_request_gets_its_own_outcome_and_writes_are_grouped():
    groups = []

    def write(raws):
        groups.append(list(raws))
        time.sleep(0.01)  # a commit takes time: requests pile up meanwhile
        return [raw * 10 for raw in raws]

    results = _run_concurrently(GroupCommit(write), list(range(40)))
    assert results == {v: v * 10 for v in range(40)}
    assert sorted(v for group in groups for v in group) == list(range(40))  # each once
    assert len(groups) < 40  # grouped


def test_a_failed_write_fails_every_request_of_its_group():
    def write(raws):
        raise ConnectionError("database down")

    results = _run_concurrently(GroupCommit(write), list(range(8)))
    assert all(isinstance(r, ConnectionError) for r in results.values())


def test_groups_are_bounded():
    sizes = []

    def write(raws):
        sizes.append(len(raws))
        time.sleep(0.005)
        return list(raws)

    results = _run_concurrently(GroupCommit(write, batch_max=3), list(range(20)))
    assert len(results) == 20 and max(sizes) <= 3


def test_a_lone_request_is_written_at_once():
    started = time.perf_counter()
    assert GroupCommit(lambda raws: [r + 1 for r in raws]).submit(1) == 2
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("rounds", [3])
def test_the_lead_passes_on_and_the_group_is_reusable(rounds):
    group = GroupCommit(list)
    for round_number in range(rounds):
        values = [round_number * 100 + v for v in range(10)]
        assert _run_concurrently(group, values) == {v: v for v in values}
