"""GET /v1/usage/summary?mode=exact through the real `aggregate` app."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from functions_framework import create_app

from core.services import api_keys, ingest
from core.services.caller import SYSTEM
from tests.conftest import PROJECT_ROOT, bearer
from tests.fixtures.samples import create_metric

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
T0 = datetime(2026, 6, 1, tzinfo=UTC)
WINDOW = "from=2026-06-01T00:00:00Z&to=2026-07-01T00:00:00Z"


@pytest.fixture
def usage(db):
    create_metric("api_calls")
    create_metric("gpu_seconds", aggregation="max", group_by=["region"])
    events = [
        {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": "1.5",
            "timestamp": (T0 + timedelta(hours=1)).isoformat(),
            "idempotency_key": "a1",
        },
        {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": 2,
            "timestamp": (T0 + timedelta(hours=2, microseconds=5)).isoformat(),
            "idempotency_key": "a2",
        },
        {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": 9,
            "timestamp": (T0 - timedelta(hours=1)).isoformat(),
            "idempotency_key": "before",
        },
        {
            "customer_id": "cust_acme",
            "metric_key": "gpu_seconds",
            "value": 7,
            "timestamp": (T0 + timedelta(hours=3)).isoformat(),
            "idempotency_key": "g1",
            "properties": {"region": "eu"},
        },
        {
            "customer_id": "cust_acme",
            "metric_key": "gpu_seconds",
            "value": 4,
            "timestamp": (T0 + timedelta(hours=4)).isoformat(),
            "idempotency_key": "g2",
            "properties": {"region": "us"},
        },
        {
            "customer_id": "cust_other",
            "metric_key": "api_calls",
            "value": 100,
            "timestamp": (T0 + timedelta(hours=1)).isoformat(),
            "idempotency_key": "o1",
        },
    ]
    assert {o.outcome for o in ingest.ingest(events, now=T0 + timedelta(days=40))} == {"accepted"}
    client = create_app(target="aggregate", source=MAIN).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(
        api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret
    )["Authorization"]
    return client


def test_an_exact_summary_counts_the_window_and_proves_what_it_counted(usage):
    body = usage.get(
        f"/v1/usage/summary?customer_id=cust_acme&metric_key=api_calls&mode=exact&{WINDOW}"
    ).get_json()
    assert (body["value"], body["event_count"], body["consistency"], body["approximate"]) == (
        "3.5",
        2,
        "exact",
        False,
    )
    assert (body["meter_versions"], body["groups"], body["from"], body["to"]) == (
        [1],
        [],
        "2026-06-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
    )
    # docs/concepts.md: per-event SHA-256 digests summed per meter version, then one line
    # per version: version, event count, digest sum mod 2^256 in hex.
    digests = sum(
        int.from_bytes(hashlib.sha256(line.encode()).digest(), "big")
        for line in ("a1\t2026-06-01T01:00:00Z\t1.5\n", "a2\t2026-06-01T02:00:00.000005Z\t2\n")
    )
    version_line = f"1\t2\t{digests % 2**256:064x}\n"
    assert body["checksum"] == "sha256:" + hashlib.sha256(version_line.encode()).hexdigest()


def test_a_grouped_metric_reports_each_group(usage):
    body = usage.get(
        f"/v1/usage/summary?customer_id=cust_acme&metric_key=gpu_seconds&mode=exact&{WINDOW}"
    ).get_json()
    assert body["value"] == "7"
    assert body["groups"] == [
        {"meter_version": 1, "group": {"region": "eu"}, "value": "7", "event_count": 1},
        {"meter_version": 1, "group": {"region": "us"}, "value": "4", "event_count": 1},
    ]


def test_without_metric_key_every_metric_with_usage(usage):
    body = usage.get(f"/v1/usage/summary?customer_id=cust_acme&mode=exact&{WINDOW}").get_json()
    assert [(s["metric_key"], s["value"]) for s in body["data"]] == [
        ("api_calls", "3.5"),
        ("gpu_seconds", "7"),
    ]


def test_summary_errors(usage):
    bad_mode = usage.get(f"/v1/usage/summary?customer_id=cust_acme&mode=fast&{WINDOW}")
    assert bad_mode.status_code == 422 and bad_mode.get_json()["errors"][0]["loc"] == [
        "query",
        "mode",
    ]
    assert (
        usage.get(
            f"/v1/usage/summary?customer_id=cust_acme&metric_key=nope&mode=exact&{WINDOW}"
        ).get_json()["code"]
        == "unknown_metric"
    )
    assert usage.get("/v1/usage/summary?customer_id=cust_acme&mode=exact").status_code == 422
    assert (
        usage.get(
            "/v1/usage/summary?customer_id=c&mode=exact&from=2026-07-01T00:00:00Z&to=2026-06-01T00:00:00Z"
        ).status_code
        == 422
    )
    assert usage.get(f"/v1/usage/summary?customer_id=c&mode=fast&{WINDOW}").status_code == 422
