"""The dev server's gunicorn worker: functions-framework's gthread worker, with keep-alive
connections spread evenly over the worker processes.

With one listen socket shared by several workers, whichever worker wakes first accepts,
and keep-alive connections stay where they landed: measured here, 32 client connections
split 26/8 or 30/4 between two workers, so one process (one GIL) served most requests
while the other idled, and throughput swung by half from run to run. Here a worker
accepts only while it holds no more connections than its least loaded sibling; the
counts live in memory shared by the arbiter and its workers. In a cluster each Knative
pod runs one worker and the queue-proxy spreads requests, so this is the dev server's
concern only.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

FREE = -1
SLOTS = 16  # workers beyond this many accept unbalanced
DISABLED_POLL_SECONDS = 0.01  # a worker that stopped accepting looks again this often


class Balance:
    """Connection counts of the live workers (one slot each, FREE when none)."""

    def __init__(self) -> None:
        self.counts: Any = multiprocessing.RawArray(ctypes.c_int, [FREE] * SLOTS)

    def assign(self) -> int | None:
        """A slot for a worker about to be forked (in the arbiter)."""
        for slot in range(SLOTS):
            if self.counts[slot] == FREE:
                self.counts[slot] = 0
                return slot
        return None

    def release(self, slot: int | None) -> None:
        """The worker of `slot` exited (in the arbiter)."""
        if slot is not None:
            self.counts[slot] = FREE

    def may_accept(self, slot: int | None, held: int) -> bool:
        """True while this worker holds no more connections than every live sibling."""
        if slot is None:
            return True
        counts = self.counts[:]  # one copy out of shared memory: this runs once per request
        counts[slot] = FREE
        return all(count == FREE or held <= count for count in counts)


def balanced_worker(balance: Balance) -> type[ThreadWorker]:
    """A gthread worker class that accepts by `balance`; with the hooks that keep the
    slots (pass both to gunicorn as pre_fork and child_exit)."""

    class BalancedThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
        shared: ClassVar[Balance] = balance
        slot: int | None = None
        _held = 0
        _quitting = False

        @property  # gthread counts its connections in nr_conns: the count is shared
        def nr_conns(self) -> int:
            return self._held

        @nr_conns.setter
        def nr_conns(self, value: int) -> None:
            self._held = value
            if self.slot is not None:
                self.shared.counts[self.slot] = value

        @property  # gthread accepts while nr_conns < worker_connections
        def worker_connections(self) -> int:
            limit = int(self.cfg.worker_connections)
            return limit if self.shared.may_accept(self.slot, self._held) else self._held

        @worker_connections.setter
        def worker_connections(self, value: int) -> None:
            pass  # gthread sets it from the config; the property reads the config

        # The quit handler only sets flags and wakes the poller (as gthread's SIGTERM
        # handler does). gthread's own quit handler shuts the thread pool down and exits
        # from inside the handler, that is from whatever the main thread was doing: inside
        # ThreadPoolExecutor.submit (holding the pool's shutdown lock, which the handler
        # then waits for forever) or inside a second handler (Ctrl-C signals the whole
        # group: a worker gets SIGINT and, a moment later, the arbiter's SIGQUIT). Either
        # hang lasted until the arbiter SIGKILLed the worker after graceful_timeout:
        # `make run` took 30 s to stop, one Ctrl-C in two.
        def handle_quit(self, sig: int, frame: Any) -> None:
            self.alive = False
            self._quitting = True
            self.method_queue.defer(lambda: None)  # a SimpleQueue put: reentrant-safe

        def wait_for_and_dispatch_events(self, timeout: float) -> None:
            # A worker that is not accepting is not woken by a sibling's new connection:
            # it looks again soon, so the least loaded worker takes the next one.
            if not self._accepting:
                timeout = min(timeout, DISABLED_POLL_SECONDS)
            super().wait_for_and_dispatch_events(timeout)
            if self._quitting:  # a quick quit, here where the main thread holds no lock
                ThreadWorker.handle_quit(self, signal.SIGQUIT, None)

    return BalancedThreadWorker


class DevArbiter(Arbiter):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's arbiter, except that a hangup stops the dev server as Ctrl-C does:
    closing the terminal of `make run` sends SIGHUP, on which gunicorn reloads, so the
    server outlived its terminal, holding the port and the embedded PostgreSQL."""

    def handle_hup(self) -> None:
        self.handle_int()


def serve(application: Any) -> None:
    """Run `application` (a gunicorn application) under DevArbiter, as its own `run()`
    would under gunicorn's Arbiter."""
    try:
        DevArbiter(application).run()
    except RuntimeError as error:
        print(f"\nError: {error}\n", file=sys.stderr, flush=True)
        sys.exit(1)


def hooks(balance: Balance) -> dict[str, Any]:
    """gunicorn settings that run the balanced worker."""

    def pre_fork(_server: Any, worker: Any) -> None:
        worker.slot = balance.assign()

    def child_exit(_server: Any, worker: Any) -> None:
        balance.release(worker.slot)

    return {
        "worker_class": balanced_worker(balance),
        "pre_fork": pre_fork,
        "child_exit": child_exit,
    }
