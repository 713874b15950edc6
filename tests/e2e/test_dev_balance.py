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


def test_connections_spread_evenly_and_survive_a_dead_worker(db: str, tmp_path: Path) -> None:
    server = start_dev_server(db, tmp_path, WORKERS="2", THREADS="4", ABAXUS_DEV_TICKS="false")
    port = int(server.base_url.rsplit(":", 1)[1])
    master = server.process.pid
    try:
        deadline = time.monotonic() + 30
        while len(_workers(master)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        connections = _open_all(port, CONNECTIONS)
        owners = _owners(master, connections)
        assert sum(owners.values()) == CONNECTIONS
        assert sorted(owners.values()) == [CONNECTIONS // 2, CONNECTIONS // 2], owners

        # One worker dies with its connections; the arbiter forks a replacement.
        victim = max(owners, key=lambda pid: owners[pid])
        survivors = [c for c in connections if _owners(master, [c]).get(victim, 0) == 0]
        assert len(survivors) == CONNECTIONS // 2
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (len(_workers(master)) < 2 or victim in _workers(master)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert victim not in _workers(master) and len(_workers(master)) == 2

        # New connections are all served (none waits on the dead worker's stale count),
        # and they go to the new worker until it holds as many as the survivor (6 + 3 = 9 each).
        fresh = _open_all(port, CONNECTIONS)
        owners = _owners(master, survivors + fresh)
        assert sum(owners.values()) == len(survivors) + CONNECTIONS
        assert sorted(owners.values()) == [CONNECTIONS * 3 // 4, CONNECTIONS * 3 // 4], owners
        for connection in connections + fresh:
            connection.close()
    finally:
        server.stop()
