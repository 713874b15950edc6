"""The ingest function as its Knative pod runs it: the image's command,
`functions-framework --source=functions/main.py` with FUNCTION_TARGET=ingest. It is an
ASGI function, so functions-framework serves it with gunicorn's uvicorn workers; single
events are answered on the event loop and everything else by the FunctionApp routes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

from core.services import api_keys
from core.services.caller import SYSTEM
from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import free_port
from tests.fixtures.samples import create_metric


def _event(key: str, value: str) -> dict[str, str]:
    return {
        "customer_id": "cust_pod",
        "metric_key": "api_calls",
        "value": value,
        "timestamp": "2026-11-01T10:00:00Z",
        "idempotency_key": key,
    }


def test_the_ingest_pod_serves_on_uvicorn_workers_and_stops_on_sigterm(
    db: str, tmp_path: Path
) -> None:
    create_metric("api_calls")
    secret = api_keys.create_key(SYSTEM, name="pod", scopes=["events:write"]).secret
    port = free_port()
    log = tmp_path / "pod.log"
    environment = {
        **os.environ,
        "DATABASE_URL": db,
        "FUNCTION_TARGET": "ingest",
        "PORT": str(port),
        "WORKERS": "1",
        "THREADS": "4",
        "ABAXUS_LOG_LEVEL": "WARNING",
    }
    environment.pop("K_SINK", None)
    with log.open("w") as sink:
        pod = subprocess.Popen(
            [sys.executable, "-m", "functions_framework", "--source=functions/main.py"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert pod.poll() is None, log.read_text()
            try:
                if requests.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {secret}"}
        single = requests.post(url + "/v1/events", json=_event("p1", "1.5"), headers=headers)
        assert single.status_code == 202, single.text
        assert single.headers["server"] == "uvicorn"  # an event-loop worker answered
        assert single.json()["status"] == "accepted"
        batch = requests.post(
            url + "/v1/events/batch",
            json={"events": [_event("p1", "1.5"), _event("p2", "2")]},
            headers=headers,
        )
        assert batch.status_code == 207, batch.text
        assert [r["outcome"] for r in batch.json()["results"]] == ["duplicate", "accepted"]
        refused = requests.post(url + "/v1/events", json=_event("p3", "1"))
        assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
        with psycopg.connect(db) as connection:
            stored = connection.execute(
                "SELECT idempotency_key, value::text FROM events ORDER BY 1"
            ).fetchall()
        assert stored == [("p1", "1.5000000000"), ("p2", "2.0000000000")]
    finally:
        if pod.poll() is None:
            os.killpg(pod.pid, signal.SIGTERM)
        code = pod.wait(timeout=30)
    assert code == 0, log.read_text()
