"""Corrections benchmark (`make bench-corrections`): a `replace` that supersedes 1M events
with 1M replacements — its preview, its apply — and the exact usage scan of the corrected
window against the same scan of an uncorrected one, in the same run.

    python bench/corrections.py [--events 1000000] [--rounds 5]

Three customers, each subscribed from June to a per_unit plan, with `--events` events on
June 10 (`cust_fixed`, `cust_plain`) or twice as many (`cust_same_rows`: as many stored
rows as the corrected window will hold) (loaded with COPY, as ingestion stores them), June's invoices issued. A replace
correction of `cust_fixed`'s June 10 gets `--events` replacement events (staged with COPY
into the correction, keys claimed, as POST /v1/corrections/{id}/events stores them). Then,
in process: the preview (exact: the apply run in a savepoint and rolled back), the apply
(staged events moved in, the window's rollups rebuilt, June's adjustment with its
checksums), and `--rounds` alternating exact June summaries of both customers. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database

JUNE, JULY = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
DAY = datetime(2026, 6, 10, tzinfo=UTC)


def _rows(prefix: str, customer: str, count: int, value: int) -> list[tuple[str, ...]]:
    rows = []
    for n in range(count):
        key = f"{prefix}-{n}"
        stamp = (DAY + timedelta(microseconds=n * 86_400_000_000 // count)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
        digest = int.from_bytes(hashlib.sha256(f"{key}\t{stamp}\t{value}\n".encode()).digest())
        sha = hashlib.sha256(key.encode()).hexdigest()
        rows.append((f"ev_{key}", customer, str(value), stamp, key, sha, str(digest)))
    return rows


def load(url: str, count: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as connection:
        for prefix, customer, n in (
            ("fixed", "cust_fixed", count),
            ("plain", "cust_plain", count),
            ("rows", "cust_same_rows", 2 * count),
        ):
            rows = _rows(prefix, customer, n, 3)
            with connection.cursor().copy(
                "COPY events (id, customer_id, metric_key, value, timestamp, properties, "
                "idempotency_key, content_sha256, region, ingest_job_id, digest) FROM STDIN"
            ) as copy:
                for event_id, cust, value, stamp, key, sha, digest in rows:
                    copy.write_row(
                        (event_id, cust, "gpu", value, stamp, "{}", key, sha, "bench", 0, digest)
                    )
            with connection.cursor().copy(
                "COPY event_keys (idempotency_key, content_sha256, event_id, event_timestamp) "
                "FROM STDIN"
            ) as copy:
                for event_id, _, _, stamp, key, sha, _ in rows:
                    copy.write_row((key, sha, event_id, stamp))
    return time.perf_counter() - started


def stage(url: str, correction_id: str, count: int) -> float:
    started = time.perf_counter()
    rows = _rows("fix", "cust_fixed", count, 2)
    with psycopg.connect(url) as connection:
        with connection.cursor().copy(
            "COPY correction_events (id, correction_id, customer_id, metric_key, value, "
            "timestamp, properties, idempotency_key, content_sha256, digest) FROM STDIN"
        ) as copy:
            for event_id, cust, value, stamp, key, sha, digest in rows:
                copy.write_row(
                    (event_id, correction_id, cust, "gpu", value, stamp, "{}", key, sha, digest)
                )
        with connection.cursor().copy(
            "COPY event_keys (idempotency_key, content_sha256, event_id, event_timestamp) "
            "FROM STDIN"
        ) as copy:
            for event_id, _, _, stamp, key, sha, _ in rows:
                copy.write_row((key, sha, event_id, stamp))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = fresh_database("abaxus_bench_corrections")
    os.environ["DATABASE_URL"] = url
    from core.config import reload_settings

    reload_settings()
    from core.domain.corrections import NewCorrection
    from core.domain.customers import NewCustomer, NewSubscription
    from core.domain.metrics import MetricDefinition
    from core.domain.pricing.charges import PlanVersionDefinition
    from core.services import corrections, usage
    from core.services.caller import SYSTEM
    from core.services.catalog import customers, metrics, plans, subscriptions
    from core.services.invoicing import lifecycle

    metrics.create_metric(
        SYSTEM,
        MetricDefinition.model_validate(
            {
                "key": "gpu",
                "name": "GPU",
                "aggregation": "sum",
                "effective_from": "2026-01-01T00:00:00Z",
            }
        ),
    )
    plans.create_plan(
        SYSTEM,
        "gpu",
        PlanVersionDefinition.model_validate(
            {
                "name": "GPU",
                "currency": "USD",
                "interval": "month",
                "charges": [{"metric_key": "gpu", "model": "per_unit", "unit_price": "0.001"}],
            }
        ),
    )
    subscription_ids = {}
    for customer in ("cust_fixed", "cust_plain", "cust_same_rows"):
        customers.create_customer(
            SYSTEM,
            NewCustomer.model_validate({"id": customer, "name": customer, "currency": "USD"}),
        )
        subscription_ids[customer] = subscriptions.create_subscription(
            SYSTEM,
            NewSubscription.model_validate(
                {"customer_id": customer, "plan_code": "gpu", "starts_at": JUNE.isoformat()}
            ),
        )["id"]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT abaxus_ensure_event_partition('2026-06-01'::date)")
    load_seconds = load(url, args.events)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE events")
        connection.execute("VACUUM ANALYZE event_keys")
    issued = {}
    for customer, subscription_id in subscription_ids.items():
        draft, _ = lifecycle.create_draft(SYSTEM, subscription_id, JUNE, JULY)
        issued[customer] = lifecycle.issue(SYSTEM, draft["id"])
    opened = corrections.create(
        SYSTEM,
        NewCorrection.model_validate(
            {
                "metric_key": "gpu",
                "customer_id": "cust_fixed",
                "from": DAY.isoformat(),
                "to": (DAY + timedelta(days=1)).isoformat(),
                "mode": "replace",
                "reason": "benchmark: every value of June 10 was 3 instead of 2",
            }
        ),
    )
    stage_seconds = stage(url, opened["id"], args.events)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE correction_events")
    started = time.perf_counter()
    preview = corrections.preview(SYSTEM, opened["id"])
    preview_seconds = time.perf_counter() - started
    started = time.perf_counter()
    applied = corrections.apply(SYSTEM, opened["id"])
    apply_seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE events")

    def scan(customer: str) -> tuple[float, object]:
        started = time.perf_counter()
        found = usage.exact_summary(customer_id=customer, metric_key="gpu", start=JUNE, end=JULY)
        return time.perf_counter() - started, found["value"]

    customers_scanned = ("cust_fixed", "cust_plain", "cust_same_rows")
    for customer in customers_scanned:
        scan(customer)
    rounds = []
    for index in range(args.rounds):
        order = customers_scanned[index % 3 :] + customers_scanned[: index % 3]
        rounds.append({customer: round(scan(customer)[0], 3) for customer in order})
    fixed = statistics.median(r["cust_fixed"] for r in rounds)
    plain = statistics.median(r["cust_plain"] for r in rounds)
    same_rows = statistics.median(r["cust_same_rows"] for r in rounds)
    (period,) = preview["periods"]
    print(
        json.dumps(
            {
                "events_superseded": args.events,
                "replacements": args.events,
                "load_s": round(load_seconds, 1),
                "stage_s": round(stage_seconds, 1),
                "preview_s": round(preview_seconds, 2),
                "apply_s": round(apply_seconds, 2),
                "preview_period": {
                    k: str(period[k]) for k in ("old_quantity", "new_quantity", "amount_difference")
                },
                "adjustments": [str(a["amount_delta"]) for a in applied["adjustments"]],
                "exact_scan_s": {
                    "corrected (1M superseded + 1M replacements stored)": fixed,
                    "uncorrected, 1M stored": plain,
                    "uncorrected, 2M stored": same_rows,
                    "rounds": rounds,
                },
                "scan_ratio_corrected_to_uncorrected_same_stored_rows": round(fixed / same_rows, 3),
                "scan_ratio_corrected_to_uncorrected_same_counted_events": round(fixed / plain, 3),
                "values": {
                    "cust_fixed": str(scan("cust_fixed")[1]),
                    "cust_plain": str(scan("cust_plain")[1]),
                },
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
