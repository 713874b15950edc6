"""The dev server as a subprocess (`abaxus dev`), exactly as `make run` starts it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

STARTUP_SECONDS_MAX = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class DevServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    output_path: Path
    started_seconds: float

    def output(self) -> str:
        return self.output_path.read_text()

    def printed_key(self) -> str:
        match = re.search(r"^\s+(abx_[A-Za-z0-9_\-]+)$", self.output(), re.MULTILINE)
        assert match, self.output()
        return match.group(1)

    def crash(self) -> None:
        """SIGKILL the server and its workers at once: no shutdown code runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=30)


def start_dev_server(database_url: str, tmp_path: Path, **env: str) -> DevServerProcess:
    port = free_port()
    output_path = tmp_path / f"devserver-{port}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "ABAXUS_LOG_LEVEL": "WARNING",
        "THREADS": "8",
        **env,
    }
    started = time.monotonic()
    with output_path.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "functions.cli", "dev"],
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a crash test kills all of it
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = started + STARTUP_SECONDS_MAX
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dev server exited early:\n{output_path.read_text()}")
        try:
            if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                return DevServerProcess(process, base_url, output_path, time.monotonic() - started)
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(
        f"dev server not healthy within {STARTUP_SECONDS_MAX}s:\n{output_path.read_text()}"
    )


@pytest.fixture
def dev_server(db: str, tmp_path: Path) -> Iterator[DevServerProcess]:
    server = start_dev_server(db, tmp_path, ABAXUS_DEV_TICKS="false")
    yield server
    server.stop()
