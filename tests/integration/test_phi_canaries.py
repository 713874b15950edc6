"""Personal data sent to ABAXUS — names, emails, free text, event properties — never comes
back out where it should not: not in a log line (the JSON logs as operators read them),
not in an error answer, not in a metric label. Canaries go through every route of every
function, in valid requests and in invalid ones (wrong shapes, malformed JSON, a media type
that is not JSON, values the database would refuse)."""

import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from functions_framework import create_app

from core.logging import ScrubbingJsonFormatter
from core.observability import render_metrics
from core.services import aggregation, api_keys
from core.services.caller import SYSTEM
from functions.routes import FUNCTIONS
from tests.asgi_client import AsgiClient
from tests.asgi_client import create_app as create_asgi_app
from tests.conftest import PROJECT_ROOT, bearer
from tests.fixtures.samples import create_metric

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
CANARY = "PHI-CANARY-7q2x Jane Roe DOB 1961-02-03"
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


def _bodies():
    """Request bodies carrying the canary in every personal or free-text field name the
    API has, in shapes that are valid for some routes and invalid for others."""
    everywhere = {
        "name": CANARY,
        "email": f"{CANARY.replace(' ', '.')}@example.test",
        "description": CANARY,
        "reason": CANARY,
        "reference": CANARY,
        "payment_method": CANARY,
        "metadata": {"note": CANARY},
        "properties": {"patient": CANARY},
    }
    yield json.dumps(everywhere).encode(), "application/json"
    yield json.dumps({**everywhere, "name": CANARY + "\u0000"}).encode(), "application/json"
    yield (
        json.dumps({"note": CANARY, "value": "NaN", "amount": CANARY}).encode(),
        "application/json",
    )
    yield ('{"name": "' + CANARY + '", ').encode(), "application/json"  # malformed
    yield CANARY.encode(), "text/plain"
    yield json.dumps([CANARY]).encode(), "application/json"


@pytest.fixture
def world(db):
    create_metric("api_calls")
    admin = api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret
    apps = {
        name: (
            create_asgi_app(target=name, source=MAIN)
            if name == "ingest"
            else create_app(target=name, source=MAIN)
        ).test_client()
        for name in FUNCTIONS
    }
    api = apps["api"]
    headers = bearer(admin)
    api.post(
        "/v1/price-plans",
        json={
            "code": "basic",
            "name": "Basic",
            "currency": "USD",
            "interval": "month",
            "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
        },
        headers=headers,
    )
    created = api.post(
        "/v1/customers",
        json={"id": "cust_1", "name": CANARY, "email": "c@example.test", "currency": "USD"},
        headers=headers,
    )
    assert created.status_code == 201  # a valid request holding personal data
    subscription = api.post(
        "/v1/subscriptions",
        json={"customer_id": "cust_1", "plan_code": "basic", "starts_at": "2026-06-01T00:00:00Z"},
        headers=headers,
    ).get_json()
    event = {
        "customer_id": "cust_1",
        "metric_key": "api_calls",
        "value": 3,
        "timestamp": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "idempotency_key": "canary-1",
        "properties": {"patient": CANARY},
    }
    assert apps["ingest"].post("/v1/events", json=event, headers=headers).status_code == 202
    aggregation.drain()
    return (
        apps,
        headers,
        {
            "customer_id": "cust_1",
            "subscription_id": subscription["id"],
            "key": "api_calls",
            "code": "basic",
        },
    )


def _path(rule, ids):
    return PARAMETER.sub(lambda m: str(ids.get(m.group(1), "unknown_1")), rule)


def test_canaries_never_reach_logs_error_answers_or_metrics(world):
    apps, headers, ids = world
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(ScrubbingJsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
    # The test's own HTTP client (httpx, for the ASGI function) logs its request URLs.
    handler.addFilter(lambda record: not record.name.startswith("httpx"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    leaks, calls = [], 0
    try:
        for name, client in apps.items():
            app = __import__(f"functions.{name}", fromlist=["APP"]).APP
            for endpoint in sorted(app.routes):
                method, rule = endpoint.split(" ", 1)
                path = _path(rule, ids)
                if method == "GET":
                    for query in ("", f"?cursor={CANARY}", f"?customer_id=cust_1&note={CANARY}"):
                        response = _send(client, "GET", path + query, headers=headers)
                        calls += 1
                        if response.status_code >= 400 and CANARY.encode() in _data(response):
                            leaks.append((method, rule, query, response.status_code))
                    continue
                for body, content_type in _bodies():
                    response = _send(
                        client,
                        method,
                        path,
                        data=body,
                        headers={**headers, "Content-Type": content_type},
                    )
                    calls += 1
                    if response.status_code >= 400 and _leaks(_data(response)):
                        leaks.append((method, rule, content_type, response.status_code))
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    assert calls > 200
    assert leaks == []
    logged = captured.getvalue()
    assert logged.count('"message"') > calls // 2  # the request log lines were captured
    leaked = [line for line in logged.splitlines() if _leaks(line.encode())]
    assert leaked == [], leaked[:3]
    assert not _leaks(render_metrics())


def _send(client, method, path, **kwargs):
    """The Flask test client and the ASGI one (the ingest function) take the method
    differently."""
    if isinstance(client, AsgiClient):
        return client.open(method, path, **kwargs)
    return client.open(path, method=method, **kwargs)


def _data(response) -> bytes:
    return response.data


def _leaks(blob: bytes) -> bool:
    """The canary, or a recognisable piece of it (a truncation would still leak)."""
    return any(piece.encode() in blob for piece in ("PHI-CANARY-7q2x", "Jane Roe", "1961-02-03"))
