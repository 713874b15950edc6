"""PostgreSQL goes away under load: `make run`'s dev server, on its own embedded PostgreSQL,
while four producers post single events and batches. The server is shut down (fast, as a
restart does) and later killed with SIGKILL (crash recovery). The dev server starts it
again by itself; /readyz fails while it is gone and recovers without restarting the dev
server; every producer re-sends what was not acknowledged, with the same keys. Afterwards:
every acknowledged event is stored, no event is stored twice, and nothing that was not
stored was ever acknowledged."""

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import start_dev_server

SECRET = "abx_faults_" + "k" * 24
PRODUCERS = 4
AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _event(key):
    return {
        "customer_id": "cust_fault",
        "metric_key": "api_calls",
        "value": 1,
        "timestamp": AT.isoformat(),
        "idempotency_key": key,
    }


@pytest.fixture
def server_with_its_own_postgres(tmp_path):
    """`abaxus dev` without DATABASE_URL: it starts (and keeps) its own embedded server."""
    server = start_dev_server(
        "",
        tmp_path,
        ABAXUS_DATA_DIR=str(tmp_path / "data"),
        ABAXUS_BOOTSTRAP_KEY=SECRET,
        ABAXUS_DEV_TICKS="false",
    )
    yield server, tmp_path / "data"
    server.stop()


def test_nothing_acknowledged_is_lost_or_doubled_across_a_restart_and_a_kill(
    server_with_its_own_postgres,
):
    server, data_dir = server_with_its_own_postgres
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {SECRET}"
    base = server.base_url
    created = session.post(
        base + "/v1/metrics",
        json={
            "key": "api_calls",
            "name": "calls",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    acknowledged: set[str] = set()
    sent: set[str] = set()
    refused = []
    lock = threading.Lock()
    outages_over = threading.Event()

    def produce(number):
        mine = requests.Session()
        mine.headers["Authorization"] = f"Bearer {SECRET}"
        single, serial, pending = number % 2 == 0, 0, []
        deadline = time.monotonic() + 150
        while (pending or not outages_over.is_set()) and time.monotonic() < deadline:
            if not pending and not outages_over.is_set():
                pending = [f"fault-{number}-{serial + n}" for n in range(1 if single else 5)]
                serial += len(pending)
                with lock:
                    sent.update(pending)
            try:
                if single:
                    response = mine.post(base + "/v1/events", json=_event(pending[0]), timeout=10)
                    ok = pending[:1] if response.status_code == 202 else []
                else:
                    response = mine.post(
                        base + "/v1/events/batch",
                        json={"events": [_event(k) for k in pending]},
                        timeout=10,
                    )
                    results = response.json()["results"] if response.status_code == 207 else []
                    ok = [
                        pending[r["index"]]
                        for r in results
                        if r["outcome"] in {"accepted", "duplicate"}
                    ]
            except requests.RequestException:
                ok = []
            with lock:
                acknowledged.update(ok)
                if len(ok) < len(pending):
                    refused.append(number)
            pending = [k for k in pending if k not in ok]  # re-sent with the same keys
            time.sleep(0.05 if pending else 0.01)

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(PRODUCERS)]
    for thread in producers:
        thread.start()
    readiness = []

    def outage(sig):
        time.sleep(1.0)
        pid = _postmaster_pid(data_dir)
        assert pid is not None
        os.kill(pid, sig)
        deadline = time.monotonic() + 60
        seen_down = False
        while time.monotonic() < deadline:
            try:
                status = requests.get(base + "/readyz", timeout=5).status_code
            except requests.RequestException:
                status = 0
            seen_down = seen_down or status == 503
            if seen_down and status == 200:
                readiness.append((sig, "down then ready", _postmaster_pid(data_dir) != pid))
                return
            time.sleep(0.1)
        readiness.append((sig, "never recovered", False))

    outage(signal.SIGINT)  # a fast shutdown, as a restart does
    outage(signal.SIGKILL)  # a crash: PostgreSQL recovers from its WAL
    time.sleep(0.5)
    outages_over.set()
    for thread in producers:
        thread.join(160)
    assert readiness == [
        (signal.SIGINT, "down then ready", True),
        (signal.SIGKILL, "down then ready", True),
    ]
    assert server.process.poll() is None  # the dev server itself never restarted
    assert refused  # the outages did refuse requests (and they were re-sent)
    everything = sent
    assert len(everything) > 200
    assert acknowledged == everything  # every event was acknowledged in the end
    stored: list[str] = []
    cursor = None
    while True:
        page = session.get(
            base + "/v1/events",
            params={
                "customer_id": "cust_fault",
                "limit": 1000,
                **({"cursor": cursor} if cursor else {}),
            },
            timeout=30,
        ).json()
        stored += [event["idempotency_key"] for event in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(stored) == len(set(stored))  # nothing stored twice
    assert set(stored) == everything  # nothing acknowledged lost, nothing stored unacknowledged
