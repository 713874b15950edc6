"""Multi-region benchmark (`make bench-regions`, API.md §10): two regions ingesting at a
sustained total rate while the central receives their events by logical replication and
folds them — replication lag at the central and whether the fold keeps up.

    python bench/regions.py [--rate 20000] [--seconds 60] [--batch 500] [--direct]

The topology of `abaxus dev --regions eu-west-1,us-east-1` (three embedded PostgreSQL
servers, three dev servers, all on this machine's cores) on fresh data directories. Load:
each region gets `--rate / 2` events/s as `POST /v1/events/batch` of `--batch` events,
paced by a schedule (a late batch is sent at once: the offered rate holds), from two
client threads per region. With `--direct`, each region's load is one process calling the
ingest function's own code (`core.services.ingest.ingest`, the batch path) against the
region's database, without the HTTP server and its JSON, as fast as the schedule asks:
what replication and the central do at a rate this machine's HTTP servers cannot offer
while sharing two cores with three PostgreSQL servers. Measured at the central after the run, from its own rows:

- replication lag per event: when the central applied it (its fold job's `created_at`,
  set by the apply's transaction) minus when its region received it (`received_at`);
- fold delay: when it was folded (the job's `finished_at`) minus when it was applied;
- the lag over time (p95 per 10 s window), to see it bounded rather than growing;
- the accepted rate actually achieved.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.services import runtime
from functions.regions_dev import Topology

KEY = "abx_bench_regions_admin_key_000000000"
AUTH = {"Authorization": f"Bearer {KEY}"}
REGIONS = ("eu-west-1", "us-east-1")


def free_port_block() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1]) % 40000 + 20000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=20_000, help="events/s, both regions")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--direct", action="store_true", help="in-process ingest, no HTTP")
    parser.add_argument("--produce", nargs=2, metavar=("REGION", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        return produce(*args.produce, args)

    base = Path(tempfile.mkdtemp(prefix="abaxus-bench-regions-"))
    topology = Topology(
        base,
        list(REGIONS),
        free_port_block(),
        env={
            "ABAXUS_BOOTSTRAP_KEY": KEY,
            "ABAXUS_LOG_LEVEL": "WARNING",
            "ABAXUS_DEV_TICKS": "false",
            "ABAXUS_HEARTBEAT_SECONDS": "1",
        },
        # A region's own fold (its local real-time views) runs on the region's machines in
        # a cluster; here every server shares two cores, so the regions' brokers do not
        # deliver events.ingested: what is measured is ingest, replication and the
        # central's fold, as each runs where it belongs.
        region_env={"ABAXUS_DEV_DELIVERIES": "false"},
        output=(base / "servers.log").open("w"),
    )
    try:
        topology.start(runtime.start_replicating_database)
        central = topology.central
        assert central is not None
        regions = {n.name: n for n in topology.nodes if n.role == "region"}
        for name, node in regions.items():
            requests.post(
                central.base_url + "/v1/regions",
                json={"region": name, "connection": node.database_url},
                headers=AUTH,
                timeout=60,
            ).raise_for_status()
        requests.post(
            central.base_url + "/v1/metrics",
            json={
                "key": "api_calls",
                "name": "API calls",
                "unit": "call",
                "aggregation": "sum",
                "effective_from": "2026-01-01T00:00:00Z",
            },
            headers=AUTH,
            timeout=60,
        ).raise_for_status()
        for node in regions.values():
            deadline = time.monotonic() + 60
            while (
                requests.get(
                    node.base_url + "/v1/metrics/api_calls", headers=AUTH, timeout=5
                ).status_code
                != 200
            ):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the catalog did not reach {node.name}")
                time.sleep(0.2)

        result = load_direct(regions, args) if args.direct else load(regions, args)
        result |= measure(central.database_url, args)
        result |= {"rate_offered": args.rate, "seconds": args.seconds, "batch": args.batch}
        print(json.dumps(result, indent=2))
    finally:
        topology.stop()
        for name in ("central", *REGIONS):
            runtime.stop_replicating_database(base / name)
        shutil.rmtree(base, ignore_errors=True)
    return 0


def load(regions: dict, args: argparse.Namespace) -> dict:
    per_region = args.rate / len(regions)
    interval = args.batch / per_region  # seconds between batches of one region
    accepted = {name: 0 for name in regions}
    lock = threading.Lock()
    now = datetime.now(UTC)
    started = time.monotonic()
    batches = int(args.seconds / interval)

    def send(name: str, index: int) -> None:
        due = started + index * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        events = [
            {
                "customer_id": f"cust_{i % 50}",
                "metric_key": "api_calls",
                "value": "1",
                "timestamp": (now - timedelta(seconds=i % 3600)).isoformat(),
                "idempotency_key": f"{name}-{index}-{i}",
            }
            for i in range(args.batch)
        ]
        response = sessions[name].post(
            regions[name].base_url + "/v1/events/batch",
            json={"events": events},
            headers=AUTH,
            timeout=120,
        )
        response.raise_for_status()
        with lock:
            accepted[name] += sum(
                1 for r in response.json()["results"] if r["outcome"] == "accepted"
            )

    sessions = {name: requests.Session() for name in regions}
    with ThreadPoolExecutor(max_workers=2 * len(regions)) as pool:
        futures = [pool.submit(send, name, i) for i in range(batches) for name in regions]
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    return {
        "accepted": accepted,
        "rate_achieved": round(sum(accepted.values()) / elapsed),
        "load_seconds": round(elapsed, 1),
        "expected_events": sum(accepted.values()),
    }


def batch_of(name: str, index: int, size: int, now: datetime) -> list[dict]:
    return [
        {
            "customer_id": f"cust_{i % 50}",
            "metric_key": "api_calls",
            "value": "1",
            "timestamp": (now - timedelta(seconds=i % 3600)).isoformat(),
            "idempotency_key": f"{name}-{index}-{i}",
        }
        for i in range(size)
    ]


def load_direct(regions: dict, args: argparse.Namespace) -> dict:
    """One producer process per region, started together."""
    per_region = args.rate // len(regions)
    started = time.monotonic()
    producers = {
        name: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--produce",
                name,
                node.database_url,
                "--rate",
                str(per_region),
                "--seconds",
                str(args.seconds),
                "--batch",
                str(args.batch),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, node in regions.items()
    }
    accepted = {
        name: int(p.communicate()[0].strip().splitlines()[-1]) for name, p in producers.items()
    }
    elapsed = time.monotonic() - started
    return {
        "load": "direct (core.services.ingest.ingest in one process per region)",
        "accepted": accepted,
        "rate_achieved": round(sum(accepted.values()) / elapsed),
        "load_seconds": round(elapsed, 1),
        "expected_events": sum(accepted.values()),
    }


def produce(region: str, url: str, args: argparse.Namespace) -> int:
    """A producer process: the region's ingest code, paced at --rate events/s."""
    os.environ.update(DATABASE_URL=url, ABAXUS_ROLE="region", ABAXUS_REGION=region)
    os.environ["ABAXUS_LOG_LEVEL"] = "WARNING"
    from core.services import ingest

    interval = args.batch / args.rate
    now = datetime.now(UTC)
    started = time.monotonic()
    accepted = 0
    for index in range(int(args.seconds / interval)):
        delay = started + index * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        outcomes = ingest.ingest(batch_of(region, index, args.batch, now), producer="bench")
        accepted += sum(1 for o in outcomes if o.outcome == "accepted")
    print(accepted, flush=True)
    return 0


def measure(central_url: str, args: argparse.Namespace) -> dict:
    with psycopg.connect(central_url, autocommit=True) as connection:
        expected = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # until everything is applied and folded
            applied, pending = connection.execute(
                "SELECT (SELECT count(*) FROM events), "
                "(SELECT count(*) FROM jobs WHERE queue = 'aggregate' AND status <> 'done')"
            ).fetchone()
            if expected is None or applied != expected:
                expected = applied
                time.sleep(2)
                continue
            if pending == 0:
                break
            time.sleep(0.5)
        lags = [
            float(lag)
            for (lag,) in connection.execute(
                "SELECT extract(epoch FROM j.created_at - e.received_at) FROM events e "
                "JOIN jobs j ON j.id = e.ingest_job_id"
            )
        ]
        folds = [
            float(delay)
            for (delay,) in connection.execute(
                "SELECT extract(epoch FROM finished_at - created_at) FROM jobs "
                "WHERE queue = 'aggregate' AND kind = 'fold' AND status = 'done'"
            )
        ]
        fold_windows = connection.execute(
            "SELECT floor(extract(epoch FROM created_at - min(created_at) OVER ()) / 10), "
            "extract(epoch FROM finished_at - created_at) FROM jobs "
            "WHERE queue = 'aggregate' AND kind = 'fold' AND status = 'done'"
        ).fetchall()
        windows = connection.execute(
            "SELECT floor(extract(epoch FROM e.received_at - min(e.received_at) OVER ()) / 10) AS w, "
            "extract(epoch FROM j.created_at - e.received_at) FROM events e "
            "JOIN jobs j ON j.id = e.ingest_job_id"
        ).fetchall()
    by_window: dict[int, list[float]] = {}
    for window, lag in windows:
        by_window.setdefault(int(window), []).append(float(lag))

    def p(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[q - 1], 3) if len(values) > 1 else 0.0

    fold_by_window: dict[int, list[float]] = {}
    for window, delay in fold_windows:
        fold_by_window.setdefault(int(window), []).append(float(delay))
    return {
        "events_at_central": len(lags),
        "fold_delay_p95_per_10s": [p(fold_by_window[w], 95) for w in sorted(fold_by_window)],
        "replication_lag_s": {"p50": p(lags, 50), "p95": p(lags, 95), "max": round(max(lags), 3)},
        "fold_delay_s": {"p50": p(folds, 50), "p95": p(folds, 95), "max": round(max(folds), 3)},
        "replication_lag_p95_per_10s": [p(by_window[w], 95) for w in sorted(by_window)],
    }


if __name__ == "__main__":
    raise SystemExit(main())
