"""Console benchmark (`make bench-console`): GET /v1/stats and the overview page with
10M events and 1,000 subscriptions loaded.

    python bench/console.py [--events 10000000] [--subscriptions 1000] [--requests 300]

Loads the events with COPY, received over this month and the last (as the fold records
them: accepted events per minute of receipt), ingest latency histograms for every minute
of the two months, 1,000 customers with monthly subscriptions and last month's invoices
issued; then, on the dev server, times `GET /v1/stats` (bearer key) and `GET /dashboard`
(a logged-in session: the page renders the four tiles and the daily charts), `--requests`
each, sequentially, after a warm-up. Prints one JSON object with p50/p95/p99 in ms.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from dateutil.relativedelta import relativedelta

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, start_dev_server

PORT = 18084
NOW = datetime.now(UTC)
THIS_MONTH = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
LAST_MONTH = THIS_MONTH - relativedelta(months=1)
BUCKETS = (3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 40)


def load_events(url: str, events: int, customers: int) -> float:
    started = time.perf_counter()
    span = int((NOW - LAST_MONTH).total_seconds()) - 120
    columns = (
        "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
        "content_sha256, region, ingest_job_id, digest, received_at"
    )
    rng = random.Random(7)
    with (
        psycopg.connect(url) as connection,
        connection.cursor().copy(f"COPY events ({columns}) FROM STDIN") as copy,
    ):
        buffer = []
        for n in range(events):
            at = LAST_MONTH + timedelta(seconds=(n * span) // events)
            stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            key = f"c-{n}"
            digest = int.from_bytes(hashlib.sha256(f"{key}\t{stamp}\t1\n".encode()).digest(), "big")
            buffer.append(
                f"ev_{n}\tcust_{rng.randrange(customers)}\tapi_calls\t1\t{stamp}\t{{}}\t{key}\t"
                f"{'0' * 64}\tbench\t0\t{digest}\t{stamp}\n".encode()
            )
            if len(buffer) >= 50_000:
                copy.write(b"".join(buffer))
                buffer.clear()
        copy.write(b"".join(buffer))
    with psycopg.connect(url, autocommit=True) as connection:
        # What the fold writes as it folds (bench/README: COPY bypasses the fold).
        connection.execute(
            "INSERT INTO ingest_minutes SELECT date_trunc('minute', received_at), count(*) "
            "FROM events GROUP BY 1"
        )
        connection.execute(
            "INSERT INTO ingest_latency (minute, bucket_ms, requests) "
            "SELECT m, b, 1 + (extract(epoch FROM m)::bigint %% 17) FROM "
            "generate_series(%s::timestamptz, %s::timestamptz, interval '1 minute') AS m, "
            "unnest(%s::int[]) AS b",
            (LAST_MONTH, NOW, list(BUCKETS)),
        )
        connection.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    url = fresh_database("abaxus_bench_console")
    secret = "abx_bench_" + uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as connection:
        for month in (LAST_MONTH, THIS_MONTH):
            connection.execute("SELECT abaxus_ensure_event_partition(%s::date)", (month.date(),))
    os.environ["DATABASE_URL"] = url
    from core.config import reload_settings

    reload_settings()
    from core.domain.customers import NewCustomer, NewSubscription
    from core.domain.metrics import MetricDefinition
    from core.domain.pricing.charges import PlanVersionDefinition
    from core.services import api_keys, stats
    from core.services.caller import SYSTEM
    from core.services.catalog import customers, metrics, plans, subscriptions
    from core.services.invoicing import lifecycle

    metrics.create_metric(
        SYSTEM,
        MetricDefinition.model_validate(
            {
                "key": "api_calls",
                "name": "API calls",
                "aggregation": "sum",
                "effective_from": "2026-01-01T00:00:00Z",
            }
        ),
    )
    plans.create_plan(
        SYSTEM,
        "pro",
        PlanVersionDefinition.model_validate(
            {
                "name": "Pro",
                "currency": "USD",
                "interval": "month",
                "charges": [{"model": "flat_fee", "name": "Fee", "amount": "49"}],
            }
        ),
    )
    for c in range(args.subscriptions):
        customers.create_customer(
            SYSTEM,
            NewCustomer.model_validate(
                {"id": f"cust_{c}", "name": f"Customer {c}", "currency": "USD"}
            ),
        )
        subscription = subscriptions.create_subscription(
            SYSTEM,
            NewSubscription.model_validate(
                {
                    "customer_id": f"cust_{c}",
                    "plan_code": "pro",
                    "starts_at": LAST_MONTH.isoformat(),
                }
            ),
        )
        draft, _ = lifecycle.create_draft(SYSTEM, subscription["id"], LAST_MONTH, THIS_MONTH)
        lifecycle.issue(SYSTEM, draft["id"])
    load_seconds = load_events(url, args.events, args.subscriptions)
    # The steady state: the aggregate tick compacts minutes older than two days into hours
    # every few seconds (a few rows at a time), and autovacuum keeps the tables lean; a
    # bulk compaction of two months at once leaves dead rows, so they are vacuumed here.
    stats.compact()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE ingest_minutes, ingest_latency, invoices, subscriptions")
    api_keys.ensure_key(secret, name="bench", scopes=["admin"])
    server = start_dev_server(
        {"DATABASE_URL": url, "ABAXUS_DEV_TICKS": "false", "ABAXUS_LOG_LEVEL": "WARNING"}, PORT
    )
    try:

        def get(path: str, headers: dict[str, str]) -> tuple[int, float, http.client.HTTPResponse]:
            connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, time.perf_counter() - started, response

        login = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        login.request(
            "POST",
            "/dashboard/login",
            body=urlencode({"api_key": secret}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer = login.getresponse()
        answer.read()
        cookie = answer.getheader("Set-Cookie").split(";", 1)[0]
        figures = {}
        for name, path, headers in (
            ("stats", "/v1/stats", {"Authorization": f"Bearer {secret}"}),
            ("overview_page", "/dashboard", {"Cookie": cookie}),
        ):
            for _ in range(20):  # warm-up
                get(path, headers)
            samples = []
            for _ in range(args.requests):
                status, seconds, _ = get(path, headers)
                assert status == 200, (path, status)
                samples.append(seconds)
            figures[name] = percentiles(samples)
    finally:
        server.terminate()
        server.wait(30)
    print(
        json.dumps(
            {
                "events": args.events,
                "subscriptions": args.subscriptions,
                "load_s": round(load_seconds, 1),
                **figures,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
