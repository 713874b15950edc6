"""Contract benchmark (`make bench-contracts`): what checking a 6-rule data contract costs
batch ingestion, against the same batches of a metric without one, in the same run.

    python bench/contracts.py [--batches 60] [--rounds 7]

Two metrics, identical but for the contract: `plain` has none; `checked` has a 6-rule one
(value: integer, minimum, maximum; properties: `region` and `route` required, `region` an
enum, `route` a pattern). Each round ingests `--batches` batches of 500 valid events into
each metric through the ingestion service (`core.services.ingest.ingest`, the code behind
POST /v1/events/batch: parse, check, store in one statement per batch, one transaction),
alternating which goes first. Prints one JSON object: events/s per metric per round, the
medians and their ratio; and the contract check alone (µs per event, in process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database

BATCH = 500
CONTRACT = {
    "value": {"type": "integer", "minimum": "0", "maximum": "1000000"},
    "properties": {
        "type": "object",
        "required": ["region", "route"],
        "properties": {
            "region": {"enum": ["eu-west-1", "us-east-1", "ap-south-1"]},
            "route": {"type": "string", "pattern": "^/"},
        },
    },
    "on_violation": "reject",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = fresh_database("abaxus_bench_contracts")
    from core.config import reload_settings

    reload_settings()
    from core.domain.contracts import CompiledContract, Contract
    from core.domain.metrics import MetricDefinition
    from core.services import ingest
    from core.services.caller import SYSTEM
    from core.services.catalog import metrics

    for key, contract in (("plain", None), ("checked", CONTRACT)):
        body = {
            "key": key,
            "name": key,
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
        }
        if contract is not None:
            body["contract"] = contract
        metrics.create_metric(SYSTEM, MetricDefinition.model_validate(body))
    now = datetime.now(UTC)
    serial = [0]

    def batch(metric: str) -> list[dict[str, object]]:
        events = []
        for n in range(BATCH):
            serial[0] += 1
            events.append(
                {
                    "customer_id": f"cust_{n % 50}",
                    "metric_key": metric,
                    "value": n % 100 + 1,
                    "timestamp": (now - timedelta(seconds=serial[0] % 86400)).isoformat(),
                    "idempotency_key": f"{metric}-{serial[0]}",
                    "properties": {"region": "eu-west-1", "route": f"/v1/r{n % 7}"},
                }
            )
        return events

    def timed(metric: str) -> float:
        batches = [batch(metric) for _ in range(args.batches)]
        started = time.perf_counter()
        for events in batches:
            outcomes = ingest.ingest(events)
            assert all(o.outcome == "accepted" for o in outcomes), outcomes[0]
        return args.batches * BATCH / (time.perf_counter() - started)

    timed("plain")  # warm-up: partitions, plans, the contract book
    timed("checked")
    rounds = []
    for index in range(args.rounds):
        order = ("plain", "checked") if index % 2 == 0 else ("checked", "plain")
        rounds.append({metric: round(timed(metric)) for metric in order})
    plain = statistics.median(r["plain"] for r in rounds)
    checked = statistics.median(r["checked"] for r in rounds)
    compiled = CompiledContract(Contract.model_validate(CONTRACT))
    properties = {"region": "eu-west-1", "route": "/v1/chat"}
    value = Decimal(10)
    count = 200_000
    started = time.perf_counter()
    for _ in range(count):
        compiled.check(value, properties)
    per_event_us = (time.perf_counter() - started) / count * 1e6
    print(
        json.dumps(
            {
                "batch": BATCH,
                "batches_per_round": args.batches,
                "rounds": rounds,
                "median_events_per_s": {"plain": plain, "checked": checked},
                "ratio_checked_to_plain": round(checked / plain, 3),
                "check_alone_us_per_event": round(per_event_us, 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
