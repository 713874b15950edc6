"""Soak benchmark (`make bench-soak`): the operational tables stay bounded and the
server's memory flat under a steady load, with retention pruning on the real ticks.

    python bench/soak.py [--minutes 10] [--rate 5]

Retention windows are days long (docs/operations.md, "Retention"), so a steady state is
prepared rather than waited for: the tables are first filled with eight days of history at
the load's own rate (idempotency records, finished jobs, handled CloudEvents, backdated
evenly), then the dev server (with its PingSources: the aggregate tick prunes every
minute) takes `--rate` keyed single events per second (each leaves an idempotency record,
an ingestion job, and folds) for `--minutes`. Every 30 s it samples each table's rows and
size and the dev server's resident memory (all its processes). Flat means: rows within a
few percent of the window's worth, RSS not growing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, start_dev_server

PORT = 18085
TABLES = ("idempotency_records", "jobs", "cloudevent_inbox")
HISTORY_DAYS = 8


def preload(url: str, rate: float) -> dict[str, int]:
    """Eight days of history at `rate` per second, evenly backdated."""
    seconds = HISTORY_DAYS * 86400
    rows = int(seconds * rate)
    step = seconds / rows
    with psycopg.connect(url, autocommit=True) as connection:
        key_id = connection.execute("SELECT id FROM api_keys LIMIT 1").fetchone()[0]
        connection.execute(
            "INSERT INTO idempotency_records SELECT %s, 'soak-old-' || n, 'POST', '/v1/events', "
            "'h', 202, '{}', '', now() - make_interval(secs => n * %s) "
            "FROM generate_series(1, %s) AS n",
            (key_id, step, rows),
        )
        connection.execute(
            "INSERT INTO jobs (queue, kind, status, max_attempts, finished_at, created_at) "
            "SELECT 'aggregate', 'fold', 'done', 8, now() - make_interval(secs => n * %s), "
            "now() - make_interval(secs => n * %s) FROM generate_series(1, %s) AS n",
            (step, step, rows),
        )
        connection.execute(
            "INSERT INTO cloudevent_inbox SELECT 'aggregate', '/soak', 'old-' || n, 't', "
            "now() - make_interval(secs => n * 1.0) FROM generate_series(1, %s) AS n",
            (seconds,),
        )
        connection.execute("VACUUM ANALYZE")
    return {"rows_per_table": rows}


def _tree(root: int) -> list[int]:
    """The dev server's processes: its own and its descendants' (workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def sample(url: str, server_pid: int) -> dict[str, object]:
    with psycopg.connect(url) as connection:
        sizes = {
            table: {
                "rows": connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0],
                "mib": round(
                    connection.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()[0]
                    / 2**20,
                    1,
                ),
            }
            for table in TABLES
        }
    rss_kib = 0
    for pid in _tree(server_pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss_kib += int(line.split()[1])
    return {"tables": sizes, "server_rss_mib": round(rss_kib / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args()
    url = fresh_database("abaxus_bench_soak")
    secret = "abx_bench_" + uuid.uuid4().hex
    server = start_dev_server(
        {"DATABASE_URL": url, "ABAXUS_BOOTSTRAP_KEY": secret, "ABAXUS_LOG_LEVEL": "WARNING"},
        PORT,
    )
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    def post(path: str, body: dict, key: str | None = None) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={**headers, **({"Idempotency-Key": key} if key else {})},
        )
        response = connection.getresponse()
        response.read()
        return response.status

    post(
        "/v1/metrics",
        {
            "key": "api_calls",
            "name": "calls",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
        },
    )
    loaded = preload(url, args.rate)
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        interval = 1 / args.rate
        while not stop.is_set():
            started = time.monotonic()
            at = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
            event = {
                "customer_id": "cust_soak",
                "metric_key": "api_calls",
                "value": 1,
                "timestamp": at,
                "idempotency_key": f"soak-{sent[0]}",
            }
            assert post("/v1/events", event, key=f"soak-{sent[0]}") == 202
            sent[0] += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    producer = threading.Thread(target=produce, daemon=True)
    samples = []
    try:
        producer.start()
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            samples.append(
                {
                    "minute": round((args.minutes * 60 - (deadline - time.monotonic())) / 60, 1),
                    **sample(url, server.pid),
                }
            )
            time.sleep(30)
        samples.append({"minute": args.minutes, **sample(url, server.pid)})
    finally:
        stop.set()
        producer.join(10)
        server.terminate()
        server.wait(30)
    print(
        json.dumps(
            {
                "rate_per_s": args.rate,
                "minutes": args.minutes,
                "events_sent": sent[0],
                "preloaded": loaded,
                "samples": samples,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
