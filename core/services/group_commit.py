"""Group commit for single events: concurrent `POST /v1/events` requests in one process
are written in one transaction, so PostgreSQL's per-transaction cost is shared.

The requests wait on an event loop (the ingest function is an ASGI function); one writer
thread of the process takes every event queued so far, ingests them in one transaction of
its own, hands each waiting request its outcome, and goes on with what queued meanwhile.
Every request is answered only after the commit that holds its event, exactly as without
grouping; concurrent requests with one idempotency key get one `accepted` and the rest
`duplicate`, as in a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

WAIT_SECONDS_MAX = 60.0


class AsyncGroupCommit:
    """The same grouping for requests answered on an event loop (the ingest function is an
    ASGI function): each request awaits a future, and one thread of the process stores a
    group at a time, then the requests that queued meanwhile, until none are left. A group
    costs one hand-off to that thread instead of one thread per waiting request, which is
    what made single events three times cheaper (docs/benchmarks.md).

    Safe across event loops (tests drive one process from several threads, each with its
    own loop): outcomes are handed back on each future's own loop."""

    def __init__(
        self, ingest: Callable[[Sequence[Any]], list[Any]], *, batch_max: int = 500
    ) -> None:
        self._ingest = ingest
        self._batch_max = batch_max
        self._lock = threading.Lock()
        self._queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self._draining = False
        self._thread: ThreadPoolExecutor | None = None
        self._pid = 0

    async def submit(self, raw: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queue.append((raw, future))
            start, self._draining = not self._draining, True
        if start:
            self._writer().submit(self._drain)
        async with asyncio.timeout(WAIT_SECONDS_MAX):
            return await future

    def _writer(self) -> ThreadPoolExecutor:
        if self._thread is None or self._pid != os.getpid():  # none inherited across a fork
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
            self._pid = os.getpid()
        return self._thread

    def _drain(self) -> None:
        while True:
            with self._lock:
                group = self._queue[: self._batch_max]
                self._queue = self._queue[self._batch_max :]
                if not group:
                    self._draining = False
                    return
            try:
                # A fresh context: the group's transaction is its own.
                outcomes = contextvars.Context().run(self._ingest, [raw for raw, _ in group])
            except BaseException as error:  # every waiting request must hear about it
                _settle([(future, None, error) for _, future in group])
            else:
                _settle(
                    [
                        (future, outcome, None)
                        for (_, future), outcome in zip(group, outcomes, strict=True)
                    ]
                )


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Hand each outcome to its future, one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
    for future, outcome, error in results:
        by_loop.setdefault(future.get_loop(), []).append((future, outcome, error))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, outcome, error in settled:
        if future.done():  # the request was cancelled (its client went away)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)
