"""The dev server's connection balance: a worker accepts only while it holds no more
connections than every live sibling (shared memory, as the forked workers use it)."""

from __future__ import annotations

import selectors
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.workers.gthread import PollableMethodQueue

from functions.devworker import FREE, SLOTS, Balance, balanced_worker


def test_slots_are_assigned_free_ones_first_and_released_on_exit() -> None:
    balance = Balance()
    first, second = balance.assign(), balance.assign()
    assert (first, second) == (0, 1)
    assert balance.counts[first] == 0 and balance.counts[2] == FREE
    balance.release(first)
    assert balance.counts[first] == FREE
    assert balance.assign() == first  # a respawned worker takes the freed slot


def test_only_the_least_loaded_worker_accepts() -> None:
    balance = Balance()
    a, b = balance.assign(), balance.assign()
    assert balance.may_accept(a, 0) and balance.may_accept(b, 0)  # ties both accept
    balance.counts[a] = 1
    assert not balance.may_accept(a, 1)  # ahead of b
    assert balance.may_accept(b, 0)
    balance.counts[b] = 1
    assert balance.may_accept(a, 1) and balance.may_accept(b, 1)


def test_an_exited_worker_does_not_hold_the_others_back() -> None:
    balance = Balance()
    a, b = balance.assign(), balance.assign()
    balance.counts[a], balance.counts[b] = 5, 0
    assert not balance.may_accept(a, 5)
    balance.release(b)  # b died with no connections: a is alone
    assert balance.may_accept(a, 5)


def test_a_worker_without_a_slot_accepts_unbalanced() -> None:
    balance = Balance()
    slots = [balance.assign() for _ in range(SLOTS)]
    assert None not in slots
    assert balance.assign() is None
    assert balance.may_accept(None, 1000)


def _worker_at_rest() -> Any:
    """A balanced gthread worker as its run loop leaves it between two turns: a thread
    pool, the method queue's pipe registered with the poller (no sockets, no arbiter)."""
    worker = object.__new__(balanced_worker(Balance()))
    worker.alive, worker._accepting = True, True
    worker.cfg = SimpleNamespace(worker_int=lambda _worker: None)
    worker.tpool = ThreadPoolExecutor(max_workers=2)
    worker.method_queue = PollableMethodQueue()
    worker.method_queue.init()
    worker.poller = selectors.DefaultSelector()
    worker.poller.register(
        worker.method_queue.fileno(), selectors.EVENT_READ, worker.method_queue.run_callbacks
    )
    return worker


def _returns_within(seconds: float, call: Callable[[], object]) -> bool:
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_quit_signals_interrupting_the_pools_lock_do_not_hang_the_worker() -> None:
    """Ctrl-C signals the whole process group: a worker gets SIGINT, and a moment later the
    arbiter's SIGQUIT, at whatever point its main thread is — inside
    ThreadPoolExecutor.submit, holding the pool's shutdown lock, say. gthread's own handler
    shut the pool down right there and waited forever for that lock. Now both handlers
    return at once, and the worker quits at the next turn of its loop, woken at once."""
    worker = _worker_at_rest()
    with worker.tpool._shutdown_lock:  # the interrupted submit holds it
        assert _returns_within(2, lambda: worker.handle_quit(signal.SIGINT, None))
        assert _returns_within(2, lambda: worker.handle_quit(signal.SIGQUIT, None))
    assert worker.alive is False
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        worker.wait_for_and_dispatch_events(timeout=5.0)
    assert exit_.value.code == 0
    assert time.monotonic() - started < 1  # woken by the handler, not the poll timeout
    assert worker.tpool._shutdown is True


def test_sigterm_only_stops_the_loop_for_a_graceful_shutdown() -> None:
    worker = _worker_at_rest()
    with worker.tpool._shutdown_lock:
        assert _returns_within(2, lambda: worker.handle_exit(signal.SIGTERM, None))
    started = time.monotonic()
    worker.wait_for_and_dispatch_events(timeout=5.0)  # woken, and no quick exit
    assert time.monotonic() - started < 1
    assert worker.alive is False and worker.tpool._shutdown is False
