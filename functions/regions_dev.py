"""`abaxus dev --regions eu-west-1,us-east-1`: a multi-region topology on one machine
(API.md §10) — one embedded PostgreSQL per region and one for the central, each a dev
server of its own role: the central on PORT, the regions on PORT+1, PORT+2, … in the order
given. The regions publish their events and replicate the central's catalog; the central
subscribes to every region (`POST /v1/regions`, here through the service). The same admin
keys (ABAXUS_BOOTSTRAP_KEY, or the key the central prints) work everywhere: keys
replicate from the central."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

READY_SECONDS_MAX = 90


@dataclass
class Node:
    """One dev server of the topology."""

    name: str
    role: str
    port: int
    database_url: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Topology:
    """A central and its regions, each a database and a dev server on loopback."""

    data_dir: Path
    regions: Sequence[str]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    region_env: Mapping[str, str] = field(default_factory=dict)  # the regions' only
    output: IO[Any] | None = None  # where the servers write (default: this process's);
    # closed by stop()
    central: Node | None = None
    nodes: list[Node] = field(default_factory=list)

    def start(self, databases: Any) -> None:
        """Start every database (`databases(path) -> url`), then the central, then each
        region, then subscribe the central to each region."""
        central_url = databases(self.data_dir / "central")
        self.central = Node("central", "central", self.port, central_url)
        regional = [
            Node(region, "region", self.port + index + 1, databases(self.data_dir / region))
            for index, region in enumerate(self.regions)
        ]
        self.serve(self.central, {"ABAXUS_REGION": "central"})
        for node in regional:
            self.serve(
                node,
                {
                    **self.region_env,
                    "ABAXUS_REGION": node.name,
                    "ABAXUS_CENTRAL_URL": self.central.base_url,
                    "ABAXUS_CATALOG_CONNECTION": central_url,
                },
            )

    def attach_all(self, attach: Any) -> None:
        """Subscribe the central to each region (`attach(region, connection)`)."""
        for node in self.nodes[1:]:
            attach(node.name, node.database_url)

    def serve(self, node: Node, env: Mapping[str, str]) -> None:
        """Start `node`'s dev server (its role, database and port) and wait until ready."""
        environment = {
            **os.environ,
            **self.env,
            **env,
            "ABAXUS_ROLE": node.role,
            "DATABASE_URL": node.database_url,
            "PORT": str(node.port),
        }
        self.nodes.append(node)  # stopped with the others, ready or not
        node.process = subprocess.Popen(
            [sys.executable, "-m", "functions.cli", "dev"],
            env=environment,
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_SECONDS_MAX
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise RuntimeError(f"the {node.name} server exited while starting")
            try:
                if requests.get(node.base_url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the {node.name} server was not ready in {READY_SECONDS_MAX}s")

    def banner(self) -> str:
        lines = ["ABAXUS multi-region topology (API.md §10):"]
        for node in self.nodes:
            role = "central " if node.role == "central" else f"region  {node.name:<14}"
            lines.append(f"  {role} {node.base_url}   ({node.database_url})")
        lines.append(f"  regions page: {self.nodes[0].base_url}/dashboard/regions")
        width = max(len(line) for line in lines) + 2
        return "\n".join(["=" * width, *lines, "=" * width])

    def stop(self) -> None:
        for node in reversed(self.nodes):
            if node.process is not None and node.process.poll() is None:
                os.killpg(node.process.pid, signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(node.process.pid, signal.SIGKILL)
        if self.output is not None:
            self.output.close()

    @staticmethod
    def _running(node: Node) -> bool:
        return node.process is not None and node.process.poll() is None

    def wait(self) -> int:
        """Until a server exits or this process is interrupted (Ctrl-C, SIGTERM); then stop
        them all (they run in sessions of their own: nothing else would)."""
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while all(
                node.process is not None and node.process.poll() is None for node in self.nodes
            ):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.stop()
        return 0


def _interrupt(_signal: int, _frame: Any) -> None:
    raise KeyboardInterrupt
