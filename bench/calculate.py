"""Calculate benchmark (`make bench-calculate`): a subscription with 5 charges over 1M
events per metric, priced through HTTP, against the exact usage scans it needs.

    python bench/calculate.py [--events-per-metric 1000000] [--rounds 7]

Loads the events with COPY (as ingestion stores them, digests included), then, interleaved
in each round: POST /v1/pricing/calculate (HTTP, dev server) and the five exact scans the
calculation runs (`core.adapters.postgres.usage.scan`, in process) and the five bare
`SELECT sum(value)`s over the same rows. Prints one JSON object with medians and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, start_dev_server

PORT = 18082
JUNE, JULY = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
CHARGES = [
    {"metric_key": "m_per_unit", "model": "per_unit", "unit_price": "0.001"},
    {
        "metric_key": "m_tiered",
        "model": "tiered",
        "tiers": [
            {"up_to": "100000", "unit_price": "0.10", "flat_fee": "5"},
            {"up_to": None, "unit_price": "0.05"},
        ],
    },
    {
        "metric_key": "m_volume",
        "model": "volume",
        "tiers": [{"up_to": "10", "unit_price": "12"}, {"up_to": None, "unit_price": "9"}],
    },
    {"metric_key": "m_package", "model": "package", "package_size": "1000", "package_price": "5"},
    {
        "metric_key": "m_formula",
        "model": "custom_formula",
        "formula": "max(0, quantity - 1000000) * 0.000002 + 10",
    },
]
AGGREGATIONS = {"m_volume": "max"}


def load(url: str, per_metric: int) -> float:
    started = time.perf_counter()
    seconds = int((JULY - JUNE).total_seconds())
    with psycopg.connect(url) as connection:
        columns = (
            "id, customer_id, metric_key, value, timestamp, properties, idempotency_key, "
            "content_sha256, region, ingest_job_id, digest"
        )
        with connection.cursor().copy(f"COPY events ({columns}) FROM STDIN") as copy:
            for charge in CHARGES:
                metric = charge["metric_key"]
                buffer = []
                for n in range(per_metric):
                    key = f"{metric}-{n}"
                    stamp = (JUNE + timedelta(seconds=n * seconds // per_metric)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                    value = n % 50 + 1
                    digest = int.from_bytes(
                        hashlib.sha256(f"{key}\t{stamp}\t{value}\n".encode()).digest(), "big"
                    )
                    buffer.append(
                        f"ev_{key}\tcust_big\t{metric}\t{value}\t{stamp}\t{{}}\t{key}\t"
                        f"{'0' * 64}\tbench\t0\t{digest}\n".encode()
                    )
                    if len(buffer) >= 10_000:
                        copy.write(b"".join(buffer))
                        buffer.clear()
                copy.write(b"".join(buffer))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events-per-metric", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    url = fresh_database("abaxus_bench_calculate")
    os.environ["DATABASE_URL"] = url
    secret = "abx_bench_" + uuid.uuid4().hex
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT abaxus_ensure_event_partition('2026-06-01'::date)")
        for charge in CHARGES:
            key = charge["metric_key"]
            connection.execute("INSERT INTO metrics (key) VALUES (%s)", (key,))
            connection.execute(
                "INSERT INTO metric_versions (metric_key, version, name, unit, aggregation, "
                "effective_from) VALUES (%s, 1, %s, 'unit', %s, '2020-01-01Z')",
                (key, key, AGGREGATIONS.get(key, "sum")),
            )
    load_seconds = load(url, args.events_per_metric)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE events")
    env = {
        **os.environ,
        "ABAXUS_BOOTSTRAP_KEY": secret,
        "PORT": str(PORT),
        "WORKERS": "1",
        "THREADS": "2",
        "ABAXUS_DEV_TICKS": "false",
        "ABAXUS_LOG_LEVEL": "WARNING",
    }
    server = start_dev_server(env, PORT)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: dict | None = None) -> tuple[float, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=300)
        started = time.perf_counter()
        connection.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        elapsed = time.perf_counter() - started
        assert response.status in {200, 201}, payload
        return elapsed, payload

    try:
        plan = {
            "code": "bench",
            "name": "Bench",
            "currency": "USD",
            "interval": "month",
            "charges": CHARGES,
        }
        call("POST", "/v1/price-plans", plan)
        call("POST", "/v1/customers", {"id": "cust_big", "name": "Big", "currency": "USD"})
        _, subscription = call(
            "POST",
            "/v1/subscriptions",
            {"customer_id": "cust_big", "plan_code": "bench", "starts_at": JUNE.isoformat()},
        )
        request = {
            "subscription_id": subscription["id"],
            "period_start": JUNE.isoformat(),
            "period_end": JULY.isoformat(),
        }
        from core.adapters.postgres.database import get_database
        from core.adapters.postgres.usage import scan
        from core.services.usage import meter_versions

        def scans() -> float:
            started = time.perf_counter()
            with get_database().transaction() as connection:
                for charge in CHARGES:
                    key = charge["metric_key"]
                    scan(
                        connection,
                        customer_id="cust_big",
                        metric_key=key,
                        versions=meter_versions(connection, key),
                        start=JUNE,
                        end=JULY,
                    )
            return time.perf_counter() - started

        def bare() -> float:
            started = time.perf_counter()
            with psycopg.connect(url) as connection:
                for charge in CHARGES:
                    connection.execute(
                        "SELECT sum(value) FROM events WHERE customer_id = 'cust_big' "
                        "AND metric_key = %s AND timestamp >= %s AND timestamp < %s",
                        (charge["metric_key"], JUNE, JULY),
                    ).fetchone()
            return time.perf_counter() - started

        from core.services import pricing

        def in_process() -> float:
            started = time.perf_counter()
            body = pricing.calculate(subscription["id"], period_start=JUNE, period_end=JULY)
            assert body["id"] == first["id"]
            return time.perf_counter() - started

        _, first = call("POST", "/v1/pricing/calculate", request)  # warm, and stores it
        scans()
        bare()
        calc_times, local_times, scan_times, bare_times = [], [], [], []
        for _ in range(args.rounds):
            elapsed, body = call("POST", "/v1/pricing/calculate", request)
            assert body["id"] == first["id"]
            calc_times.append(elapsed)
            local_times.append(in_process())
            scan_times.append(scans())
            bare_times.append(bare())
        calc, local, scanned, bare_sql = (
            statistics.median(t) for t in (calc_times, local_times, scan_times, bare_times)
        )
        report = {
            "events_per_metric": args.events_per_metric,
            "charges": len(CHARGES),
            "copy_events_per_s": round(len(CHARGES) * args.events_per_metric / load_seconds),
            "calculate_http_median_s": round(calc, 3),
            "calculate_in_process_median_s": round(local, 3),
            "five_exact_scans_median_s": round(scanned, 3),
            "five_bare_sums_median_s": round(bare_sql, 3),
            "pricing_overhead_vs_scans": f"{(local / scanned - 1) * 100:.1f}%",
            "http_end_to_end_vs_scans": f"{(calc / scanned - 1) * 100:.1f}%",
            "ratio_to_bare_sums": round(calc / bare_sql, 2),
            "total": first["total"],
            "rounds": args.rounds,
        }
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
