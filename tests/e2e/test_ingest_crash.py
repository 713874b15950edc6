"""Kill -9 the dev server while batches are being posted, restart it, re-send everything:
the stored events are exactly the distinct events sent — nothing lost, nothing twice."""

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import requests

from core.services import api_keys
from core.services.caller import SYSTEM
from tests.e2e.conftest import start_dev_server
from tests.fixtures.samples import create_metric

BATCHES = 40
BATCH_EVENTS = 250
# Fixed for the whole test: a re-sent event must be the same event.
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _batch(number):
    base = BASE
    return [
        {
            "customer_id": f"cust_{n % 7}",
            "metric_key": "api_calls",
            "value": f"{number}.{n:03d}",
            "timestamp": (base + timedelta(seconds=n)).isoformat(),
            "idempotency_key": f"crash-{number}-{n}",
        }
        for n in range(BATCH_EVENTS)
    ]


def _post_all(base_url, secret, batches, acknowledged, stop=None):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    for number in batches:
        if stop is not None and stop.is_set():
            return
        try:
            response = session.post(
                f"{base_url}/v1/events/batch", json={"events": _batch(number)}, timeout=30
            )
        except requests.RequestException:
            continue  # the server died under us: unknown outcome, re-sent later
        if response.status_code == 207:
            outcomes = {r["outcome"] for r in response.json()["results"]}
            assert outcomes <= {"accepted", "duplicate"}, outcomes
            acknowledged.add(number)


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(db, tmp_path):
    create_metric("api_calls")
    secret = api_keys.create_key(SYSTEM, name="producer", scopes=["events:write"]).secret
    server = start_dev_server(db, tmp_path, ABAXUS_DEV_TICKS="false")
    acknowledged: set[int] = set()
    client = threading.Thread(
        target=_post_all, args=(server.base_url, secret, range(BATCHES), acknowledged)
    )
    client.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.crash()  # mid-stream: the client is posting as it dies
    client.join(timeout=120)
    assert 5 <= len(acknowledged) < BATCHES, "the crash should land mid-stream"

    with psycopg.connect(db) as connection:
        stored_before = {k for (k,) in connection.execute("SELECT idempotency_key FROM events")}
    for number in acknowledged:  # every 202 before the crash was durable
        assert {e["idempotency_key"] for e in _batch(number)} <= stored_before

    restarted = start_dev_server(db, tmp_path, ABAXUS_DEV_TICKS="false")
    try:
        again: set[int] = set()
        _post_all(restarted.base_url, secret, range(BATCHES), again)
        assert again == set(range(BATCHES))
    finally:
        restarted.stop()

    sent = {
        (e["idempotency_key"], e["customer_id"], e["value"])
        for n in range(BATCHES)
        for e in _batch(n)
    }
    with psycopg.connect(db) as connection:
        rows = connection.execute(
            "SELECT idempotency_key, customer_id, trim(trailing '0' from value::text) FROM events"
        ).fetchall()
        keys = connection.execute("SELECT count(*) FROM event_keys").fetchone()[0]
    normalized = {(k, c, v.rstrip(".")) for k, c, v in rows}
    expected = {(k, c, v.rstrip("0").rstrip(".")) for k, c, v in sent}
    assert len(rows) == len(sent) == BATCHES * BATCH_EVENTS  # nothing twice
    assert normalized == expected  # nothing lost, nothing changed
    assert keys == len(sent)
