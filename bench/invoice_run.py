"""Bulk invoice run benchmark (`make bench-invoice-run`): 500 customers with 5 metrics and a
month of usage (5M events), one bulk run through the CloudEvents pipeline on the dev
server (local broker): invoice.requested -> calculate -> calculation.completed -> invoice
(draft + issue) -> invoice.issued -> charge (manual provider: an awaiting payment).

    python bench/invoice_run.py [--customers 500] [--events-per-metric 2000]

Prints one JSON object: wall time of the run (from POST /v1/invoices/bulk to every
invoice issued and its payment attempt recorded) and invoices/s.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, start_dev_server

PORT = 18083
OCTOBER, NOVEMBER = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
METRICS = ["api_calls", "build_minutes", "tokens", "storage_gb", "seats"]
CHARGES = [
    {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.001"},
    {
        "metric_key": "build_minutes",
        "model": "tiered",
        "tiers": [
            {"up_to": "1000", "unit_price": "0.01", "flat_fee": "0"},
            {"up_to": None, "unit_price": "0.008"},
        ],
    },
    {"metric_key": "tokens", "model": "package", "package_size": "10000", "package_price": "1"},
    {
        "metric_key": "storage_gb",
        "model": "volume",
        "tiers": [{"up_to": "50000", "unit_price": "0.02"}, {"up_to": None, "unit_price": "0.015"}],
    },
    {
        "metric_key": "seats",
        "model": "custom_formula",
        "formula": "max(0, quantity - 1000) * 0.05 + 20",
    },
    {"model": "flat_fee", "name": "Platform fee", "amount": "49"},
]


def load(url: str, customers: int, per_metric: int) -> float:
    started = time.perf_counter()
    seconds = int((NOVEMBER - OCTOBER).total_seconds())
    columns = (
        "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
        "content_sha256, region, ingest_job_id, digest"
    )
    with (
        psycopg.connect(url) as connection,
        connection.cursor().copy(f"COPY events ({columns}) FROM STDIN") as copy,
    ):
        buffer = []
        for c in range(customers):
            for metric in METRICS:
                for n in range(per_metric):
                    key = f"{c}-{metric}-{n}"
                    stamp = (OCTOBER + timedelta(seconds=(n * seconds) // per_metric)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                    value = (n + c) % 20 + 1
                    digest = int.from_bytes(
                        hashlib.sha256(f"{key}\t{stamp}\t{value}\n".encode()).digest(), "big"
                    )
                    buffer.append(
                        f"ev_{key}\tcust_{c}\t{metric}\t{value}\t{stamp}\t{{}}\t{key}\t"
                        f"{'0' * 64}\tbench\t0\t{digest}\n".encode()
                    )
                    if len(buffer) >= 20_000:
                        copy.write(b"".join(buffer))
                        buffer.clear()
        copy.write(b"".join(buffer))
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE events")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--events-per-metric", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    url = fresh_database("abaxus_bench_invoice_run")
    secret = "abx_bench_" + uuid.uuid4().hex
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "ABAXUS_BOOTSTRAP_KEY": secret,
        "PORT": str(PORT),
        "WORKERS": str(args.workers),
        "THREADS": str(args.threads),
        "ABAXUS_DEV_TICKS": "false",
        "ABAXUS_LOG_LEVEL": "WARNING",
    }
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT abaxus_ensure_event_partition('2026-10-01'::date)")
    server = start_dev_server(env, PORT)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict | None = None) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
        connection.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        assert response.status in {200, 201, 202}, payload
        return payload

    try:
        for metric in METRICS:
            call(
                "POST",
                "/v1/metrics",
                {
                    "key": metric,
                    "name": metric,
                    "aggregation": "sum",
                    "effective_from": "2026-01-01T00:00:00Z",
                },
            )
        call(
            "POST",
            "/v1/price-plans",
            {
                "code": "bench",
                "name": "Bench",
                "currency": "USD",
                "interval": "month",
                "charges": CHARGES,
            },
        )
        for c in range(args.customers):
            call(
                "POST",
                "/v1/customers",
                {"id": f"cust_{c}", "name": f"Customer {c}", "currency": "USD"},
            )
            call(
                "POST",
                "/v1/subscriptions",
                {
                    "customer_id": f"cust_{c}",
                    "plan_code": "bench",
                    "starts_at": OCTOBER.isoformat(),
                },
            )
        load_seconds = load(url, args.customers, args.events_per_metric)
        events = args.customers * len(METRICS) * args.events_per_metric
        started = time.perf_counter()
        run = call(
            "POST",
            "/v1/invoices/bulk",
            {"period_end": NOVEMBER.isoformat(), "issue": True, "charge": True},
        )
        assert run["subscriptions"] == args.customers, run
        while True:
            status = call("GET", f"/v1/invoices/runs/{run['id']}")
            if status["complete"]:
                break
            time.sleep(0.2)
        with psycopg.connect(url) as connection:
            while True:  # the charge step: one payment attempt per issued invoice
                (attempts,) = connection.execute("SELECT count(*) FROM payments").fetchone()
                if attempts >= args.customers:
                    break
                time.sleep(0.2)
        wall = time.perf_counter() - started
        with psycopg.connect(url) as connection:
            (database_bytes,) = connection.execute(
                "SELECT pg_database_size(current_database())"
            ).fetchone()
        report = {
            "customers": args.customers,
            "events": events,
            "copy_events_per_s": round(events / load_seconds),
            "run_wall_s": round(wall, 2),
            "invoices_per_s": round(args.customers / wall, 1),
            "events_billed_per_s": round(events / wall),
            "database_gib": round(database_bytes / 2**30, 2),
            "by_status": status["by_status"],
            "failed": status["failed"],
            "payments_recorded": attempts,
            "workers": args.workers,
            "threads": args.threads,
        }
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
