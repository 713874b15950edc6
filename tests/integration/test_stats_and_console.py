"""GET /v1/stats (API.md §9) from small tables, and the console's sessions over HTTP:
cookie attributes, CSRF refusal, the Content-Security-Policy, logout."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from functions_framework import create_app

from core.adapters.postgres.database import get_database
from core.adapters.postgres.stats import add_latencies
from core.config import reload_settings
from core.services import aggregation, api_keys, ingest, stats
from core.services.caller import SYSTEM
from core.services.invoicing import lifecycle
from tests.conftest import PROJECT_ROOT, bearer
from tests.fixtures.samples import create_metric
from tests.integration.catalog_client import Api

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def api(db):
    create_metric("api_calls")
    admin = api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret
    return create_app(target="api", source=MAIN).test_client(), bearer(admin), admin


def _events(count, prefix, at):
    return [
        {
            "customer_id": "cust_s",
            "metric_key": "api_calls",
            "value": 1,
            "timestamp": at.isoformat(),
            "idempotency_key": f"{prefix}-{n}",
        }
        for n in range(count)
    ]


def test_stats_count_accepted_events_by_receipt_not_duplicates(api):
    client, headers, _ = api
    empty = client.get("/v1/stats", headers=headers).get_json()
    assert empty["events_ingested"] == {"value": 0, "previous": 0, "change": None}
    assert empty["consistency"] == "eventual"
    first = NOW.replace(day=1, hour=0, minute=0, second=0)
    assert empty["window"]["start"] == first.isoformat().replace("+00:00", "Z")
    assert empty["previous"]["end"] == empty["window"]["start"]
    ingest.ingest(_events(30, "a", NOW - timedelta(minutes=1)))
    ingest.ingest(_events(30, "a", NOW - timedelta(minutes=1)))  # all duplicates
    aggregation.drain()
    answer = client.get("/v1/stats", headers=headers).get_json()
    assert answer["events_ingested"] == {"value": 30, "previous": 0, "change": None}


def test_stats_windows_and_change(api):
    client, headers, _ = api
    with get_database().transaction() as connection:
        connection.exec_driver_sql(
            "INSERT INTO ingest_minutes VALUES ('2026-03-01T10:00:00Z', 80), ('2026-03-02T10:00:00Z', 20), "
            "('2026-02-27T10:00:00Z', 50), ('2026-03-03T00:00:00Z', 999)"
        )
    window = "from=2026-03-01T00:00:00Z&to=2026-03-03T00:00:00Z"
    answer = client.get(f"/v1/stats?{window}", headers=headers).get_json()
    assert answer["window"] == {"start": "2026-03-01T00:00:00Z", "end": "2026-03-03T00:00:00Z"}
    assert answer["previous"] == {"start": "2026-02-27T00:00:00Z", "end": "2026-03-01T00:00:00Z"}
    assert answer["events_ingested"] == {"value": 100, "previous": 50, "change": "1"}
    refused = client.get(
        "/v1/stats?from=2026-03-03T00:00:00Z&to=2026-03-01T00:00:00Z", headers=headers
    )
    assert refused.status_code == 422
    assert client.get("/v1/stats?from=2026-03-01T00:00:00Z", headers=headers).status_code == 422


def test_stats_active_subscriptions_and_revenue_with_its_basis(api):
    client, headers, admin = api
    catalog = Api(admin)
    catalog.post(
        "/v1/price-plans",
        {
            "code": "p",
            "name": "P",
            "currency": "USD",
            "interval": "month",
            "charges": [{"model": "flat_fee", "name": "Fee", "amount": "10"}],
        },
    )
    catalog.post("/v1/customers", {"id": "cust_s", "name": "S", "currency": "USD"})
    subscription = catalog.post(
        "/v1/subscriptions",
        {"customer_id": "cust_s", "plan_code": "p", "starts_at": "2026-03-01T00:00:00Z"},
    )
    march, april, may = (datetime(2026, m, 1, tzinfo=UTC) for m in (3, 4, 5))
    lifecycle.issue(
        SYSTEM, lifecycle.create_draft(SYSTEM, subscription["id"], march, april)[0]["id"]
    )
    lifecycle.create_draft(SYSTEM, subscription["id"], april, may)
    answer = client.get(  # a calendar month compares with the calendar month before
        "/v1/stats?from=2026-04-01T00:00:00Z&to=2026-05-01T00:00:00Z", headers=headers
    ).get_json()
    assert answer["previous"]["start"] == "2026-03-01T00:00:00Z"
    assert answer["active_subscriptions"] == {"value": 1, "previous": 1, "change": "0"}
    assert answer["period_revenue"]["by_currency"] == {
        "USD": {"value": "10", "previous": "10", "change": "0"}
    }
    assert "drafts" in answer["period_revenue"]["basis"]


def test_the_ingest_p95_combines_the_histograms_every_worker_flushed(api):
    client, headers, _ = api
    minute = NOW.replace(second=0) - timedelta(minutes=3)
    with get_database().transaction() as connection:
        add_latencies(connection, {(minute, 5): 90, (minute, 40): 5})  # worker one
        add_latencies(connection, {(minute, 5): 4, (minute, 250): 1})  # worker two
    answer = client.get("/v1/stats", headers=headers).get_json()
    # 100 requests: 94 within 5 ms, the 95th within 40 ms
    assert answer["ingest_latency_p95_ms"]["value"] == 40
    recorder = stats.LatencyRecorder()
    for _ in range(99):
        recorder.observe(0.0031, at=minute)
    recorder.observe(0.9, at=minute)
    assert recorder.flush() == 100
    answer = client.get("/v1/stats", headers=headers).get_json()
    # 200 requests: 99 within 4 ms, 193 within 5 ms: the 190th is in the 5 ms bucket
    assert answer["ingest_latency_p95_ms"]["value"] == 5


def test_stats_change_is_null_when_there_was_nothing_before():
    from core.domain.stats import change, percentile

    assert change(5, 0) is None and change(0, 4) == D("-1.000")
    assert change(D("48290.00"), D("44425.30")) == D("0.087")
    assert percentile({}, D("0.95")) is None


# -- the console over HTTP --------------------------------------------------------------------


def _login(client, secret):
    return client.post(
        "/dashboard/login",
        data={"api_key": secret},
        content_type="application/x-www-form-urlencoded",
    )


def test_the_session_cookie_is_signed_httponly_strict_and_expires(api, monkeypatch):
    client, _, admin = api
    page = client.get("/dashboard")
    assert page.status_code == 200 and b'name="api_key"' in page.data  # the login form
    csp = page.headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in csp
        and "frame-ancestors 'none'" in csp
        and "unsafe-inline" not in csp
    )
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    answer = _login(client, admin)
    assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard"
    cookie = answer.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=28800"):
        assert attribute in cookie
    assert "Secure" not in cookie
    overview = client.get("/dashboard")
    assert overview.status_code == 200 and b"Events ingested" in overview.data
    monkeypatch.setenv("ABAXUS_CONSOLE_SECURE_COOKIE", "true")
    reload_settings()
    try:
        assert "; Secure" in _login(client, admin).headers["Set-Cookie"]
    finally:
        monkeypatch.delenv("ABAXUS_CONSOLE_SECURE_COOKIE")
        reload_settings()
    client.set_cookie(
        "abaxus_session", "forged." + cookie.split("=", 1)[1].split(";")[0][-20:], path="/dashboard"
    )
    assert b'name="api_key"' in client.get("/dashboard").data  # a forged cookie is no session


def test_an_events_write_key_cannot_log_in_and_a_revoked_key_ends_its_session(api):
    client, headers, _ = api
    producer = api_keys.create_key(SYSTEM, name="p", scopes=["events:write"]).secret
    refused = _login(client, producer)
    assert refused.status_code == 403 and b"read or admin" in refused.data
    reader = api_keys.create_key(SYSTEM, name="r", scopes=["read"])
    assert _login(client, reader.secret).status_code == 303
    assert client.get("/dashboard/audit").status_code == 200
    client.delete(f"/v1/api-keys/{reader.key['id']}", headers=headers)
    assert b'name="api_key"' in client.get("/dashboard").data


def test_state_changing_forms_need_the_sessions_csrf_token_and_logout_ends_it(api):
    client, _, admin = api
    assert _login(client, admin).status_code == 303
    forged = client.post(
        "/dashboard/logout",
        data={"csrf": "not-the-token"},
        content_type="application/x-www-form-urlencoded",
    )
    assert forged.status_code == 403 and b"CSRF" in forged.data
    page = client.get("/dashboard").get_data(as_text=True)
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = client.post(
        "/dashboard/logout", data={"csrf": token}, content_type="application/x-www-form-urlencoded"
    )
    assert out.status_code == 303 and "Max-Age=0" in out.headers["Set-Cookie"]
    assert b'name="api_key"' in client.get("/dashboard").data


def test_static_assets_are_served_with_long_caching_and_nothing_outside_the_folder(api):
    client, _, _ = api
    from functions.console.web import static_url

    url = static_url("vendor/uplot-1.6.31/uPlot.iife.min.js")
    asset = client.get(url)
    assert asset.status_code == 200 and asset.headers["Cache-Control"].endswith("immutable")
    assert asset.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert client.get("/dashboard/static/../web.py").status_code == 404
