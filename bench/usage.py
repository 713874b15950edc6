"""Usage benchmark (`make bench-usage`): real-time and exact summaries at volume.

    python bench/usage.py [--events 10000000] [--first 1000000] [--big 1000000]

1. Loads `--first` events for 1,000 customers over three months with COPY (the fast
   path: events written as ingestion writes them, digests included, one fold job per
   5,000 events), lets the aggregator catch up (events/s folded), and measures real-time
   summaries of random customer-months over HTTP (p50/p95).
2. Loads the rest up to `--events`, among them one customer with `--big` events in one
   month, folds again and measures the same real-time summaries: their cost must not
   grow with the events.
3. Measures the exact summary of the big customer-month over HTTP against the bare
   `SELECT sum(value)` over the same rows, interleaved in the same run.

Prints one JSON object. Server, database and client share this machine's cores.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, start_dev_server

PORT = 18081
MONTHS = [datetime(2026, m, 1, tzinfo=UTC) for m in (6, 7, 8, 9)]
SECONDS = int((MONTHS[3] - MONTHS[0]).total_seconds())
JOB_EVENTS = 5000
COPY_COLUMNS = (
    "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
    "content_sha256, region, ingest_job_id, digest"
)


def _line(n: int, customer: str, at: datetime, value: int, job: int) -> bytes:
    key = f"bench-{n}"
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = int.from_bytes(hashlib.sha256(f"{key}\t{stamp}\t{value}\n".encode()).digest(), "big")
    return (
        f"ev_{n}\t{customer}\tapi_calls\t{value}\t{stamp}\t"
        f'{{"region": "eu"}}\t{key}\t{"0" * 64}\tbench\t{job}\t{digest}\n'
    ).encode()


def load(url: str, start_n: int, count: int, big: int, rng: random.Random) -> float:
    """COPY `count` events (the first `big` of them for cust_big in July) with their fold
    jobs, in one transaction; returns seconds."""
    started = time.perf_counter()
    jobs_needed = (count + JOB_EVENTS - 1) // JOB_EVENTS
    with psycopg.connect(url) as connection:
        job_ids = [
            row[0]
            for row in connection.execute(
                "INSERT INTO jobs (queue, kind, payload, max_attempts) "
                "SELECT 'aggregate', 'fold', jsonb_build_object('events', %s::int), 8 "
                "FROM generate_series(1, %s) RETURNING id",
                (JOB_EVENTS, jobs_needed),
            )
        ]
        july = int((MONTHS[2] - MONTHS[1]).total_seconds())
        with connection.cursor().copy(f"COPY events ({COPY_COLUMNS}) FROM STDIN") as copy:
            buffer: list[bytes] = []
            for offset in range(count):
                n = start_n + offset
                if offset < big:
                    customer = "cust_big"
                    at = MONTHS[1] + timedelta(seconds=offset * july // big)
                else:
                    customer = f"cust_{rng.randrange(1000)}"
                    at = MONTHS[0] + timedelta(seconds=rng.randrange(SECONDS))
                buffer.append(
                    _line(n, customer, at, rng.randint(1, 100), job_ids[offset // JOB_EVENTS])
                )
                if len(buffer) >= 10_000:
                    copy.write(b"".join(buffer))
                    buffer.clear()
            copy.write(b"".join(buffer))
    return time.perf_counter() - started


def fold(url: str) -> dict[str, float]:
    """Run the aggregator until the queue is empty (in a process like the function's)."""
    code = (
        "import time, json; from core.services import aggregation; t = time.perf_counter(); "
        "r = aggregation.drain(); print(json.dumps({'seconds': time.perf_counter() - t, "
        "'jobs': r.done}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DATABASE_URL": url, "ABAXUS_LOG_LEVEL": "WARNING"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def get(secret: str, path: str) -> tuple[float, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    started = time.perf_counter()
    connection.request("GET", path, headers={"Authorization": f"Bearer {secret}"})
    response = connection.getresponse()
    body = json.loads(response.read())
    elapsed = time.perf_counter() - started
    connection.close()
    assert response.status == 200, body
    return elapsed, body


def realtime_latencies(secret: str, requests: int, rng: random.Random) -> dict[str, float]:
    times = []
    for _ in range(requests):
        month = rng.randrange(3)
        path = (
            f"/v1/usage/summary?customer_id=cust_{rng.randrange(1000)}&metric_key=api_calls"
            f"&from={MONTHS[month]:%Y-%m-%dT%H:%M:%SZ}&to={MONTHS[month + 1]:%Y-%m-%dT%H:%M:%SZ}"
        )
        elapsed, body = get(secret, path)
        assert body["consistency"] == "eventual"
        times.append(elapsed * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
        "requests": requests,
    }


def exact_against_bare(url: str, secret: str, rounds: int, big: int) -> dict[str, object]:
    window = f"from={MONTHS[1]:%Y-%m-%dT%H:%M:%SZ}&to={MONTHS[2]:%Y-%m-%dT%H:%M:%SZ}"
    path = f"/v1/usage/summary?customer_id=cust_big&metric_key=api_calls&mode=exact&{window}"
    bare_sql = (
        "SELECT sum(value) FROM events WHERE customer_id = 'cust_big' AND metric_key = 'api_calls' "
        "AND timestamp >= %s AND timestamp < %s"
    )
    exact_times, bare_times = [], []
    with psycopg.connect(url) as connection:
        get(secret, path)  # warm both
        connection.execute(bare_sql, (MONTHS[1], MONTHS[2])).fetchone()
        for _ in range(rounds):
            elapsed, body = get(secret, path)
            exact_times.append(elapsed)
            started = time.perf_counter()
            (bare_sum,) = connection.execute(bare_sql, (MONTHS[1], MONTHS[2])).fetchone()
            bare_times.append(time.perf_counter() - started)
    assert body["event_count"] == big
    assert str(bare_sum).rstrip("0").rstrip(".") == body["value"]
    exact, bare = statistics.median(exact_times), statistics.median(bare_times)
    return {
        "exact_http_median_s": round(exact, 3),
        "bare_sql_median_s": round(bare, 3),
        "ratio": round(exact / bare, 2),
        "events": body["event_count"],
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--first", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rng = random.Random(7)

    url = fresh_database("abaxus_bench_usage")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO metrics (key) VALUES ('api_calls')")
        connection.execute(
            "INSERT INTO metric_versions (metric_key, version, name, unit, aggregation, effective_from) "
            "VALUES ('api_calls', 1, 'API calls', 'call', 'sum', '2020-01-01Z')"
        )
        for month in MONTHS[:3]:
            connection.execute("SELECT abaxus_ensure_event_partition(%s::date)", (month.date(),))
    secret = "abx_bench_" + uuid.uuid4().hex
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ABAXUS_BOOTSTRAP_KEY": secret,
        "PORT": str(PORT),
        "WORKERS": "1",
        "THREADS": "4",
        "ABAXUS_DEV_TICKS": "false",
        "ABAXUS_LOG_LEVEL": "WARNING",
    }
    report: dict[str, object] = {"events": args.events}
    load_seconds = load(url, 0, args.first, 0, rng)
    folded = fold(url)
    report["at_first"] = {
        "events_loaded": args.first,
        "copy_events_per_s": round(args.first / load_seconds),
        "fold_events_per_s": round(args.first / folded["seconds"]),
    }
    server = start_dev_server(env, PORT)
    try:
        report["at_first"]["realtime"] = realtime_latencies(secret, args.requests, rng)  # type: ignore[index]
        rest = args.events - args.first
        load_seconds = load(url, args.first, rest, args.big, rng)
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE events")
        folded = fold(url)
        with psycopg.connect(url) as connection:
            rollup_rows = connection.execute("SELECT count(*) FROM usage_rollups").fetchone()
        report["at_all"] = {
            "events_loaded": args.events,
            "copy_events_per_s": round(rest / load_seconds),
            "fold_events_per_s": round(rest / folded["seconds"]),
            "rollup_rows": rollup_rows[0] if rollup_rows else None,
            "realtime": realtime_latencies(secret, args.requests, rng),
        }
        report["exact_big_customer_month"] = exact_against_bare(url, secret, args.rounds, args.big)
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
