"""The measurement prototype behind the ingest function's event-loop path (session 7):
single events served from an event loop, kept to reproduce docs/benchmarks.md's figures.

The question it answered (docs/benchmarks.md, "What bounds the targets"): how much of a
single event's cost was the thread-per-request HTTP stack (gunicorn gthread, Flask,
functions-framework) rather than ingestion itself. Here `POST /v1/events` is a bare ASGI
app under uvicorn (httptools parser, uvloop), and each process's concurrent requests go to
the same group commit as the real endpoint (`ingest_single_async`: one database thread
per process). Nothing else of the endpoint is here (no problem+json,
request ids, metrics): `functions/ingest.py` is the product version of this design, and
`abaxus dev` now serves it, so the comparison below is the prototype against the product.

    .venv/bin/python bench/event_loop_prototype.py [--rounds 3] [--singles 9600]

Each round runs the single-event load of bench/ingest.py (32 keep-alive clients: 4
processes x 8 threads) against `abaxus dev` and then against this prototype (2 worker
processes each), on fresh databases of the same PostgreSQL, and prints one JSON line per
run: requests/s, p50/p95/p99 and the server's CPU per request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, start_dev_server, wait_until_answers
from bench.ingest import events, single_load, warm_up

PORT = 18095


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app uvicorn serves (`bench.event_loop_prototype:app`)."""
    from core.domain.errors import AbaxusError
    from core.services import ingest

    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/v1/events" and scope["method"] == "POST":
        bearer = dict(scope["headers"]).get(b"authorization", b"").decode()[len("Bearer ") :]
        try:
            result = await ingest.ingest_single_async(json.loads(body), api_key=bearer)
        except AbaxusError as error:
            status, payload = 401, {"code": error.code}
        else:
            status = 202
            payload = {"status": result.outcome, "idempotency_key": result.idempotency_key}
            payload["id"] = result.id
    elif scope["path"] == "/healthz":
        status, payload = 200, {"status": "ok"}
    else:
        status, payload = 404, {"code": "not_found"}
    out = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(out)).encode()),
        (b"x-request-id", ("req_" + uuid.uuid4().hex).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def _database() -> tuple[str, str]:
    url = fresh_database("abaxus_bench_loop")
    secret = "abx_bench_" + uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO metrics (key) VALUES ('api_calls')")
        connection.execute(
            "INSERT INTO metric_versions (metric_key, version, name, unit, aggregation, "
            "effective_from) VALUES ('api_calls', 1, 'API calls', 'call', 'sum', '2020-01-01Z')"
        )
    return url, secret


def _load(port: int, secret: str, count: int, prefix: str) -> list[float]:
    return single_load(
        port, secret, [json.dumps(event).encode() for event in events(prefix, count)]
    )


def _cpu(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def _measure(name: str, server: subprocess.Popen[bytes], secret: str, count: int) -> None:
    before, started = _cpu(server.pid), time.perf_counter()
    latencies = _load(PORT, secret, count, f"{name}-{uuid.uuid4().hex[:8]}")
    seconds = time.perf_counter() - started
    cpu_ms = (_cpu(server.pid) - before) / len(latencies) * 1000

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000, 2)

    print(
        json.dumps(
            {
                "server": name,
                "requests_per_second": round(len(latencies) / seconds),
                "p50_ms": pct(50),
                "p95_ms": pct(95),
                "p99_ms": pct(99),
                "server_cpu_ms_per_request": round(cpu_ms, 3),
            }
        ),
        flush=True,
    )


def _prototype(url: str, secret: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "ABAXUS_LOG_LEVEL": "WARNING"}
    from core.adapters.postgres.database import reset_database
    from core.config import reload_settings
    from core.services import api_keys

    admin = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    reload_settings()
    reset_database()  # this round's database, not the previous one's
    api_keys.ensure_key(secret, name="bench", scopes=["admin"])
    reset_database()
    if admin is None:  # fresh_database takes the admin URL from the environment
        del os.environ["DATABASE_URL"]
    else:
        os.environ["DATABASE_URL"] = admin
    reload_settings()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "bench.event_loop_prototype:app"),
            *("--port", str(PORT), "--workers", "2", "--http", "httptools", "--loop", "uvloop"),
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_answers(PORT, "/healthz")
    _load(PORT, secret, 1280, f"warm-{uuid.uuid4().hex[:8]}")  # pools, prepared statements
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--singles", type=int, default=9600)
    args = parser.parse_args()
    for _ in range(args.rounds):
        url, secret = _database()
        env = {
            "DATABASE_URL": url,
            "ABAXUS_BOOTSTRAP_KEY": secret,
            "WORKERS": "2",
            "THREADS": "16",
            "ABAXUS_DEV_TICKS": "false",
            "ABAXUS_DEV_DELIVERIES": "false",
            "ABAXUS_LOG_LEVEL": "WARNING",
            "ABAXUS_DB_POOL_SIZE": "18",
        }
        server = start_dev_server(env, PORT)
        try:
            warm_up(PORT, secret, server.pid)
            _measure("abaxus dev (2 uvicorn workers)", server, secret, args.singles)
        finally:
            server.terminate()
            server.wait(timeout=30)
        url, secret = _database()
        server = _prototype(url, secret)
        try:
            _measure("prototype (uvicorn 2 workers, event loop)", server, secret, args.singles)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
