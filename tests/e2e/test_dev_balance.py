"""Keep-alive connections to `abaxus dev` spread evenly over its worker processes, and a
worker that dies does not leave the others refusing connections."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import psutil

from tests.e2e.conftest import start_dev_server

CONNECTIONS = 12


def _open_all(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections opened at once (as a load test's clients do), each
    served one request, so each was accepted by some worker."""
    connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
    for connection in connections:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    for connection in connections:
        received = b""
        while b"\r\n\r\n" not in received:
            received += connection.recv(4096)
        assert received.startswith(b"HTTP/1.1 200"), received
    return connections


def _owners(master: int, connections: list[socket.socket]) -> Counter[int]:
    """Worker pid holding the server end of each connection."""
    ours = {c.getsockname()[1] for c in connections}
    owners: Counter[int] = Counter()
    for worker in psutil.Process(master).children():
        for held in worker.net_connections(kind="tcp"):
            if held.raddr and held.raddr.port in ours and held.status == psutil.CONN_ESTABLISHED:
                owners[worker.pid] += 1
    return owners


def _workers(master: int) -> list[int]:
    return sorted(p.pid for p in psutil.Process(master).children())


def _two_workers(master: int, gone: int | None = None) -> list[int]:
    """The master's two workers once the same two pids (not `gone`) are seen in three
    polls in a row: a process the arbiter forks for a moment is not a worker."""
    seen: list[list[int]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = _workers(master)
        seen = [*seen[-2:], current]
        settled = len(seen) == 3 and all(s == current for s in seen) and len(current) == 2
        if settled and gone not in current:
            return current
        time.sleep(0.2)
    raise AssertionError(f"the master did not settle on two workers: {seen}")


def test_connections_spread_evenly_and_survive_a_dead_worker(db: str, tmp_path: Path) -> None:
    server = start_dev_server(db, tmp_path, WORKERS="2", THREADS="4", ABAXUS_DEV_TICKS="false")
    port = int(server.base_url.rsplit(":", 1)[1])
    master = server.process.pid
    connections: list[socket.socket] = []
    try:
        _two_workers(master)
        connections = _open_all(port, CONNECTIONS)
        owners = _owners(master, connections)
        assert sum(owners.values()) == CONNECTIONS
        assert sorted(owners.values()) == [CONNECTIONS // 2, CONNECTIONS // 2], owners

        # One worker dies with its connections; the arbiter forks a replacement.
        victim = max(owners, key=lambda pid: owners[pid])
        survivors = [c for c in connections if _owners(master, [c]).get(victim, 0) == 0]
        assert len(survivors) == CONNECTIONS // 2
        os.kill(victim, signal.SIGKILL)
        workers = _two_workers(master, gone=victim)

        # New connections are all served, and they go to the new worker until it holds as
        # many as the survivor (with all 6 survivors still open: 9 each).
        # (The survivor's idle connections may meanwhile have met gunicorn's 2 s keep-alive
        # timeout: count what it holds now.) A dead worker's stale count would leave some
        # of them never accepted, and _open_all would time out.
        held = sum(_owners(master, survivors).values())
        fresh = _open_all(port, CONNECTIONS)
        connections += fresh
        owners = _owners(master, survivors + fresh)
        assert sorted(owners) == workers
        assert sum(owners.values()) == held + CONNECTIONS
        assert max(owners.values()) - min(owners.values()) <= 1, (held, owners)
    finally:
        for connection in connections:
            connection.close()
        server.stop()
