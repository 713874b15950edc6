"""What every benchmark does the same way: a fresh database on the embedded server (or
the one DATABASE_URL names) and a dev server that is ready before the clock starts."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

from core.adapters.postgres.embedded import create_database, drop_database, start_embedded
from core.adapters.postgres.migrate import upgrade_to_head

ROOT = Path(__file__).resolve().parent.parent


def fresh_database(name: str) -> str:
    """Drop and create `name`, migrate it to head; returns its URL."""
    admin = os.environ.get("DATABASE_URL") or start_embedded(ROOT / ".abaxus", database="postgres")
    drop_database(admin, name)
    create_database(admin, name)
    url = (
        admin.rsplit("/", 1)[0] + "/" + name
        if "?" not in admin
        else admin.replace("/postgres?", f"/{name}?")
    )
    upgrade_to_head(url)
    return url


def start_dev_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """`abaxus dev` with this environment, returned once /readyz answers 200."""
    server = subprocess.Popen(
        [sys.executable, "-m", "functions.cli", "dev"],
        env={**os.environ, **env, "PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_answers(port, "/readyz")
    return server


def wait_until_answers(port: int, path: str, attempts: int = 600) -> None:
    """Until GET `path` on 127.0.0.1:`port` answers 200 (a server starting up)."""
    for _ in range(attempts):
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            probe.request("GET", path)
            if probe.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
