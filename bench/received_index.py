"""What the events_received BRIN index (migration 0018) costs batch ingestion
(`python bench/received_index.py`): the same 60 batches of 500 events through the
ingestion service with the index and without it, alternating, 8 rounds, in one database.
Prints one JSON object: events/s per round, the medians and their ratio."""

from __future__ import annotations

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

INDEX = (
    "CREATE INDEX events_received ON events USING brin (received_at) WITH (pages_per_range = 32)"
)


def main() -> None:
    url = fresh_database("abaxus_bench_received_index")
    os.environ["DATABASE_URL"] = url
    from core.config import reload_settings

    reload_settings()
    from core.domain.metrics import MetricDefinition
    from core.services import ingest
    from core.services.caller import SYSTEM
    from core.services.catalog import metrics

    metrics.create_metric(
        SYSTEM,
        MetricDefinition.model_validate(
            {
                "key": "calls",
                "name": "calls",
                "aggregation": "sum",
                "effective_from": "2026-01-01T00:00:00Z",
            }
        ),
    )
    now = datetime.now(UTC)
    serial = [0]

    def batch() -> list[dict[str, object]]:
        events = []
        for n in range(500):
            serial[0] += 1
            events.append(
                {
                    "customer_id": f"cust_{n % 50}",
                    "metric_key": "calls",
                    "value": 1,
                    "timestamp": (now - timedelta(seconds=serial[0] % 86400)).isoformat(),
                    "idempotency_key": f"k{serial[0]}",
                    "properties": {"region": "eu-west-1"},
                }
            )
        return events

    def timed() -> float:
        batches = [batch() for _ in range(60)]
        started = time.perf_counter()
        for events in batches:
            ingest.ingest(events)
        return 60 * 500 / (time.perf_counter() - started)

    def index(present: bool) -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("DROP INDEX IF EXISTS events_received")
            if present:
                connection.execute(INDEX)

    timed()  # warm-up
    rounds = []
    for number in range(8):
        order = (True, False) if number % 2 == 0 else (False, True)
        found = {}
        for present in order:
            index(present)
            found["brin" if present else "none"] = round(timed())
        rounds.append(found)
    with_index = statistics.median(r["brin"] for r in rounds)
    without = statistics.median(r["none"] for r in rounds)
    ratios = sorted(r["brin"] / r["none"] for r in rounds)
    print(
        json.dumps(
            {
                "rounds": rounds,
                "median_events_per_s": {"with_brin": with_index, "without": without},
                "ratio_of_medians": round(with_index / without, 3),
                "median_of_round_ratios": round(statistics.median(ratios), 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
