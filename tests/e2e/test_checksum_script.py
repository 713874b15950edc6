"""The documented script recomputes an exact summary's checksum from GET /v1/events."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import requests

from core.config import settings
from core.domain.metrics import MetricDefinition, MetricVersionDefinition
from core.services import api_keys, ingest
from core.services.caller import SYSTEM
from core.services.catalog import metrics
from functions.devserver import DevServer
from tests.conftest import PROJECT_ROOT
from tests.contract.http_servers import serve_asgi

T0 = datetime(2026, 8, 1, tzinfo=UTC)


def test_the_docs_script_reproduces_the_exact_checksum(db):
    base = {"name": "API calls", "aggregation": "sum"}
    metrics.create_metric(
        SYSTEM,
        MetricDefinition.model_validate(
            {**base, "key": "api_calls", "effective_from": "2026-01-01T00:00:00Z"}
        ),
    )
    metrics.add_version(
        SYSTEM,
        "api_calls",
        MetricVersionDefinition.model_validate(
            {
                **base,
                "filters": {"region": ["eu", "true"]},
                "effective_from": (T0 + timedelta(days=3)).isoformat(),
            }
        ),
    )
    events = [
        {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": f"{n}.{n % 7}",
            "timestamp": (T0 + timedelta(hours=n * 3, microseconds=(n % 3) * 500000)).isoformat(),
            "idempotency_key": f"évt-{n}",
            "properties": {"region": ["eu", "us", True][n % 3]},
        }
        for n in range(60)
    ]
    assert {o.outcome for o in ingest.ingest(events, now=T0 + timedelta(days=30))} == {"accepted"}
    secret = api_keys.create_key(SYSTEM, name="reader", scopes=["read"]).secret
    start, end = "2026-08-01T06:00:00Z", "2026-08-07T00:00:00Z"
    holder = {}
    with serve_asgi(lambda *call: holder["app"](*call)) as url:  # noqa: PLW0108 - late-bound
        holder["app"] = DevServer(base_url=url, knative_dir=settings().abaxus_knative_dir)
        summary = requests.get(
            f"{url}/v1/usage/summary",
            params={
                "customer_id": "cust_acme",
                "metric_key": "api_calls",
                "mode": "exact",
                "from": start,
                "to": end,
            },
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        ).json()
        script = subprocess.run(
            [
                sys.executable,
                str(PROJECT_ROOT / "tools" / "usage_checksum.py"),
                url,
                secret,
                "cust_acme",
                "api_calls",
                start,
                end,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert summary["meter_versions"] == [1, 2] and summary["event_count"] > 20
    assert script.stdout.strip() == summary["checksum"]
