"""The dev server's connection balance: a worker accepts only while it holds no more
connections than every live sibling (shared memory, as the forked workers use it)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from uvicorn.config import Config

from functions.devworker import FREE, SLOTS, Balance, BalancedServer


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


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _answered(connection: socket.socket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(4096).startswith(b"HTTP/1.1 200")
    except TimeoutError:
        return False


def test_a_server_holding_more_than_its_sibling_stops_accepting_until_they_are_even() -> None:
    """The dev worker's server accepts by itself and pauses while it holds more keep-alive
    connections than its least loaded sibling (uvloop cannot pause a server)."""
    balance = Balance()
    mine, sibling = balance.assign(), balance.assign()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    config = Config(_hello, loop="uvloop", http="httptools", lifespan="off", log_level="warning")
    server = BalancedServer(config, balance, mine)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])))
    thread.start()
    port = listener.getsockname()[1]
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        first = socket.create_connection(("127.0.0.1", port))
        clients.append(first)
        first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answered(first, 5)
        assert balance.counts[mine] == 1  # published: one held, the sibling none

        second = socket.create_connection(("127.0.0.1", port))  # waits in the backlog
        clients.append(second)
        second.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not _answered(second, 0.3)
        balance.counts[sibling] = 1  # the sibling took one: even again
        assert _answered(second, 5)
        assert balance.counts[mine] == 2
    finally:
        for client in clients:
            client.close()
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive()
