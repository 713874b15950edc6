"""The dev server's gunicorn worker: the uvicorn worker functions-framework runs for an ASGI
function (the ingest function is one), with keep-alive connections spread evenly over the
worker processes.

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

import asyncio
import ctypes
import logging
import multiprocessing
import socket
import sys
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

log = logging.getLogger("abaxus.devworker")

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
        counts = self.counts[:]  # one copy out of shared memory
        counts[slot] = FREE
        return all(count == FREE or held <= count for count in counts)


class BalancedServer(Server):
    """uvicorn's server, except that it accepts connections itself (a reader on the
    listening socket, `connect_accepted_socket` with uvicorn's own HTTP protocol) so that
    it can stop accepting while it holds more connections than its least loaded sibling
    — uvloop's servers cannot pause. Its count is published every `DISABLED_POLL_SECONDS`
    and after every accepted connection."""

    def __init__(self, config: Config, balance: Balance, slot: int | None) -> None:
        super().__init__(config)
        self._balance = balance
        self._slot = slot
        self._listeners: list[socket.socket] = []
        self._accepting = False
        self._connecting = 0
        self._tick: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:  # not under the dev arbiter: uvicorn's own way
            await super().startup(sockets=sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(3)  # uvicorn's STARTUP_FAILURE
        self._listeners = list(sockets)
        for listener in self._listeners:
            listener.setblocking(False)
        self.servers = []
        self._rebalance()
        self.started = True

    def _protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]  # uvicorn's protocols take these
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )

    def _set_accepting(self, accepting: bool) -> None:
        if accepting == self._accepting:
            return
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            if accepting:
                loop.add_reader(listener.fileno(), self._accept, listener)
            else:
                loop.remove_reader(listener.fileno())
        self._accepting = accepting

    def _accept(self, listener: socket.socket) -> None:
        try:
            connection, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # a sibling took it
        except OSError as error:  # out of file descriptors: try again later
            log.warning("accept failed: %s", error)
            return
        connection.setblocking(False)
        self._connecting += 1
        task = asyncio.get_running_loop().create_task(self._connect(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._rebalance()

    async def _connect(self, connection: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._protocol, connection)
        except OSError:
            connection.close()
        finally:
            self._connecting -= 1

    def _rebalance(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        held = len(self.server_state.connections) + self._connecting
        if self._slot is not None:
            self._balance.counts[self._slot] = held
        self._set_accepting(not self.should_exit and self._balance.may_accept(self._slot, held))
        self._tick = asyncio.get_running_loop().call_later(DISABLED_POLL_SECONDS, self._rebalance)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._listeners:
            self._set_accepting(False)
        await super().shutdown(sockets=sockets)


def balanced_worker(balance: Balance) -> type[UvicornWorker]:
    """A uvicorn worker class (uvloop, httptools: what functions-framework runs for an ASGI
    function) that accepts by `balance`; with the hooks that keep the slots (pass both to
    gunicorn as pre_fork and child_exit)."""

    class BalancedUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
        CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "uvloop", "http": "httptools"}
        shared: ClassVar[Balance] = balance
        slot: int | None = None

        async def _serve(self) -> None:
            self.config.app = self.wsgi
            server = BalancedServer(self.config, self.shared, self.slot)
            self._install_sigquit_handler()
            await server.serve(sockets=self.sockets)
            if not server.started:
                sys.exit(Arbiter.WORKER_BOOT_ERROR)

    return BalancedUvicornWorker


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
