"""The console in a real headless Chromium against the real dev server: logging in, the
overview's tiles equal /v1/stats and rise live, parity agrees after folding and names the
late-usage adjustment after a late event, an invoice line lists its events and the page
recomputes their checksum, a read session cannot re-send a dead letter; no console error,
no request to another host, a screenshot of every page."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from dateutil.relativedelta import relativedelta
from playwright.sync_api import expect

from tests.browser.conftest import ADMIN_SECRET, Watched, log_in

pytestmark = pytest.mark.browser

NOW = datetime.now(UTC).replace(microsecond=0)
THIS_MONTH = NOW.replace(day=1, hour=0, minute=0, second=0)
LAST_MONTH = THIS_MONTH - relativedelta(months=1)


@pytest.fixture(scope="module")
def world(console_server):
    base = console_server.base_url
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {ADMIN_SECRET}"

    def post(path, body, expect=(200, 201, 202, 207)):
        response = admin.post(base + path, json=body, timeout=30)
        assert response.status_code in expect, response.text
        return response.json() if response.content else None

    post(
        "/v1/metrics",
        {
            "key": "api_calls",
            "name": "API calls",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
        },
    )
    post(
        "/v1/price-plans",
        {
            "code": "pro",
            "name": "Pro",
            "currency": "USD",
            "interval": "month",
            "charges": [
                {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.5"},
                {"model": "flat_fee", "name": "Platform fee", "amount": "20"},
            ],
        },
    )
    post(
        "/v1/customers",
        {
            "id": "cust_console",
            "name": "Console & Co <b>",
            "currency": "USD",
            "email": "billing@console.test",
        },
    )
    subscription = post(
        "/v1/subscriptions",
        {"customer_id": "cust_console", "plan_code": "pro", "starts_at": LAST_MONTH.isoformat()},
    )
    events = [
        {
            "customer_id": "cust_console",
            "metric_key": "api_calls",
            "value": 2,
            "timestamp": (LAST_MONTH + timedelta(days=3, minutes=n)).isoformat(),
            "idempotency_key": f"console-last-{n}",
        }
        for n in range(12)
    ]
    post("/v1/events/batch", {"events": events})
    draft = post(
        "/v1/invoices",
        {
            "subscription_id": subscription["id"],
            "period_start": LAST_MONTH.isoformat(),
            "period_end": THIS_MONTH.isoformat(),
        },
    )
    issued = post(f"/v1/invoices/{draft['id']}/issue", {})
    read_key = post("/v1/api-keys", {"name": "console reader", "scopes": ["read"]})["secret"]
    return {
        "base": base,
        "admin": admin,
        "post": post,
        "subscription": subscription,
        "invoice": issued,
        "read_key": read_key,
    }


def _stats(world):
    return world["admin"].get(world["base"] + "/v1/stats", timeout=10).json()


def _tile(seen: Watched, key: str) -> str:
    return seen.page.locator(f'[data-tile="{key}"] [data-field="value"]').inner_text()


def _wait(predicate, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_a_read_session_sees_the_tiles_of_v1_stats_and_they_rise_live(watched, world):
    log_in(watched, world["read_key"])
    stats = _stats(world)
    events = stats["events_ingested"]["value"]
    assert _tile(watched, "events_ingested") == f"{events:,}"
    assert _tile(watched, "active_subscriptions") == f"{stats['active_subscriptions']['value']:,}"
    revenue = stats["period_revenue"]["by_currency"].get("USD", {"value": "0"})["value"]
    assert _tile(watched, "period_revenue") == f"{float(revenue):,.2f}"
    assert watched.page.locator("#live-text").inner_text().startswith("Live")
    watched.shot("overview")
    fresh = [
        {
            "customer_id": "cust_console",
            "metric_key": "api_calls",
            "value": 1,
            "timestamp": (NOW - timedelta(minutes=2)).isoformat(),
            "idempotency_key": f"console-live-{n}",
        }
        for n in range(7)
    ]
    world["post"]("/v1/events/batch", {"events": fresh})
    assert _wait(lambda: _tile(watched, "events_ingested") == f"{events + 7:,}"), _tile(
        watched, "events_ingested"
    )
    assert _stats(world)["events_ingested"]["value"] == events + 7
    watched.page.set_viewport_size({"width": 390, "height": 844})
    watched.shot("overview-phone")
    watched.clean()


def test_an_invoice_line_lists_its_events_and_the_page_recomputes_their_checksum(watched, world):
    log_in(watched, world["read_key"])
    invoice = world["invoice"]
    page = watched.page
    page.goto(f"{world['base']}/dashboard/invoices/{invoice['id']}")
    usage_line = next(line for line in invoice["lines"] if line["type"] == "usage")
    details = page.locator("details.events").first
    details.locator("summary").click()
    verdict = details.locator(".verify")
    expect(verdict).to_contain_text(
        re.compile("checksum recomputed|differs|not served"), timeout=15000
    )
    assert details.locator("tbody tr").count() == usage_line["event_count"] == 12
    assert verdict.get_attribute("data-recomputed") == usage_line["events_checksum"]
    assert verdict.inner_text().startswith("✓")
    assert page.get_by_role("link", name="PDF").count() == 1
    watched.shot("invoice")
    page.goto(f"{world['base']}/dashboard/customers/cust_console")
    assert "Console &amp; Co &lt;b&gt;" in page.content()  # escaped, not markup
    watched.shot("customer")
    page.goto(f"{world['base']}/dashboard/customers?q=console")
    assert page.get_by_role("link", name="cust_console").count() == 1
    watched.shot("customers")
    watched.clean()


def test_parity_agrees_after_folding_and_names_a_late_usage_adjustment(watched, world):
    log_in(watched, ADMIN_SECRET)
    base = world["base"]
    query = f"from={LAST_MONTH.isoformat()}&to={THIS_MONTH.isoformat()}".replace("+", "%2B")
    page = watched.page
    page.goto(f"{base}/dashboard/customers/cust_console/parity?{query}")
    row = page.locator('tr[data-metric="api_calls"]')
    assert row.locator('[data-field="realtime"]').inner_text() == "24"
    assert row.locator('[data-field="exact"]').inner_text() == "24"
    assert row.locator('[data-field="invoiced"]').inner_text() == "24"
    assert "agree" in page.locator(".verdict").inner_text()
    watched.shot("parity-equal")
    late = {
        "customer_id": "cust_console",
        "metric_key": "api_calls",
        "value": 3,
        "timestamp": (LAST_MONTH + timedelta(days=9)).isoformat(),
        "idempotency_key": "console-late-1",
    }
    world["post"]("/v1/events", late)

    def adjustments():
        return (
            world["admin"]
            .get(base + "/v1/adjustments?customer_id=cust_console", timeout=10)
            .json()["data"]
        )

    assert _wait(lambda: len(adjustments()) == 1)
    (adjustment,) = adjustments()
    page.goto(f"{base}/dashboard/customers/cust_console/parity?{query}")
    reasons = row.locator('[data-field="reasons"]').inner_text()
    assert adjustment["id"] in reasons and "late usage" in reasons
    assert row.locator('[data-field="exact"]').inner_text() == "27"
    assert row.locator('[data-field="adjusted"]').inner_text() == "3"
    assert page.get_by_role("link", name=adjustment["id"]).count() == 1
    watched.shot("parity-late-usage")
    watched.clean()


def test_the_events_explorer_says_why_an_event_does_not_count(watched, world):
    world["post"](
        "/v1/metrics",
        {
            "key": "eu_calls",
            "name": "EU calls",
            "aggregation": "count",
            "filters": {"region": ["eu-west-1"]},
            "effective_from": "2026-01-01T00:00:00Z",
        },
    )
    world["post"](
        "/v1/events/batch",
        {
            "events": [
                {
                    "customer_id": "cust_console",
                    "metric_key": "eu_calls",
                    "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
                    "idempotency_key": "eu-1",
                    "properties": {"region": "eu-west-1"},
                },
                {
                    "customer_id": "cust_console",
                    "metric_key": "eu_calls",
                    "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
                    "idempotency_key": "eu-2",
                },
            ]
        },
    )
    log_in(watched, world["read_key"])
    watched.page.goto(
        f"{world['base']}/dashboard/events?customer_id=cust_console&metric_key=eu_calls"
    )
    excluded = watched.page.locator("tr.excluded")
    assert excluded.count() == 1
    assert "properties.region is missing, not one of eu-west-1" in excluded.inner_text()
    assert watched.page.locator("tr.counted").count() == 1
    watched.shot("events")
    watched.clean()


def test_a_read_session_cannot_resend_a_dead_letter_and_an_admin_can(watched, world):
    base = world["base"]
    event = CloudEvent(
        {"type": "dev.abaxus.nobody.v1", "source": "/console-test", "id": "dl-1"}, {"x": 1}
    )
    headers, body = to_structured(event)
    kept = requests.post(
        base + "/_functions/api/dead-letters", headers=headers, data=body, timeout=10
    )
    assert kept.status_code == 202
    log_in(watched, world["read_key"])
    page = watched.page
    page.goto(base + "/dashboard/dead-letters")
    button = page.get_by_role("button", name="Re-send")
    assert button.is_disabled()
    watched.shot("dead-letters-read")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    letter_id = re.search(r"/dead-letters/(\d+)/", page.content()).group(1)
    refused = page.evaluate(
        """async ([url, csrf]) => (await fetch(url, {method: "POST", body: new URLSearchParams({csrf}),
             credentials: "same-origin", redirect: "manual"})).status""",
        [f"{base}/dashboard/dead-letters/{letter_id}/redeliver", csrf],
    )
    assert refused == 403
    watched.errors = [e for e in watched.errors if "403" not in e]  # that refusal, expected
    page.goto(base + "/dashboard/audit")
    watched.shot("audit")
    page.goto(base + "/dashboard/regions")
    watched.shot("regions")
    watched.clean()


def test_logging_out_ends_the_session_and_a_wrong_key_is_refused(watched, world):
    page = watched.page
    page.goto(world["base"] + "/dashboard")
    page.get_by_label("API key").fill("abx_not_a_key_at_all_000000000")
    page.get_by_role("button", name="Log in").click()
    assert "unknown API key" in page.locator(".error").inner_text()
    watched.shot("login-refused")
    log_in(watched, world["read_key"])
    page.get_by_role("button", name="Log out").click()
    page.wait_for_selector("label:has-text('API key')")
    page.goto(world["base"] + "/dashboard/customers")
    assert page.get_by_label("API key").count() == 1  # back at the login form
    watched.errors = [e for e in watched.errors if "401" not in e]
    watched.clean()


def test_the_overview_reads_no_asset_from_outside_and_is_keyboard_navigable(watched, world):
    log_in(watched, world["read_key"])
    page = watched.page
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused.strip() == "Skip to content"
    assets = json.loads(
        page.evaluate("JSON.stringify(performance.getEntriesByType('resource').map(e => e.name))")
    )
    assert assets and all(url.startswith(world["base"]) for url in assets)
    watched.clean()


def test_a_metric_page_shows_its_contract_and_quarantine_and_its_owner_releases(watched, world):
    post = world["post"]
    contract = {
        "owner": "team-gateway",
        "producers": ["gateway"],
        "value": {"type": "integer", "minimum": "0"},
        "properties": {
            "type": "object",
            "required": ["region"],
            "properties": {"region": {"enum": ["eu-west-1"]}},
        },
        "on_violation": "quarantine",
    }
    post(
        "/v1/metrics",
        {
            "key": "gpu_seconds",
            "name": "GPU seconds",
            "unit": "second",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
            "contract": contract,
        },
    )
    gateway = post("/v1/api-keys", {"name": "gateway", "scopes": ["events:write"]})["secret"]
    owner = post(
        "/v1/api-keys",
        {"name": "gateway owner", "scopes": ["read", "corrections:write"], "team": "team-gateway"},
    )["secret"]
    at = (NOW - timedelta(minutes=3)).isoformat()
    sent = requests.post(
        world["base"] + "/v1/events/batch",
        json={
            "events": [
                {
                    "customer_id": "cust_console",
                    "metric_key": "gpu_seconds",
                    "value": value,
                    "timestamp": at,
                    "idempotency_key": key,
                    "properties": properties,
                }
                for key, value, properties in (
                    ("gpu-ok", 5, {"region": "eu-west-1"}),
                    ("gpu-region", 7, {"region": "ap-south-1"}),
                    ("gpu-negative", -3, {"region": "eu-west-1"}),
                )
            ]
        },
        headers={"Authorization": f"Bearer {gateway}"},
        timeout=10,
    ).json()
    assert [r["outcome"] for r in sent["results"]] == ["accepted", "quarantined", "quarantined"]
    # A read-only session sees it all and may not release.
    log_in(watched, world["read_key"])
    page = watched.page
    page.goto(world["base"] + "/dashboard/metrics")
    row = page.locator("tr", has_text="gpu_seconds")
    assert "team-gateway" in row.inner_text() and "quarantine" in row.inner_text()
    expect(row.locator("td").last).to_have_text("2")
    row.get_by_role("link", name="gpu_seconds").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("GPU seconds")
    facts = page.locator("dl.facts-grid").inner_text()
    assert "team-gateway" in facts and "gateway" in facts
    held = page.locator("table tbody tr")
    expect(held).to_have_count(2)
    text = held.all_inner_texts()
    assert any("/properties/region enum" in t and "gpu-region" in t for t in text), text
    assert any("/value minimum" in t and "gpu-negative" in t for t in text), text
    assert page.get_by_role("button", name="Check again and release what passes").is_disabled()
    watched.shot("metric-quarantine")
    # The owner widens the region rule in a new version and releases from the console.
    requests.post(
        world["base"] + "/v1/metrics/gpu_seconds/versions",
        json={
            "name": "GPU seconds",
            "unit": "second",
            "aggregation": "sum",
            "effective_from": THIS_MONTH.isoformat(),
            "contract": {
                **contract,
                "properties": {
                    "type": "object",
                    "required": ["region"],
                    "properties": {"region": {"enum": ["eu-west-1", "ap-south-1"]}},
                },
            },
        },
        headers={"Authorization": f"Bearer {owner}"},
        timeout=10,
    ).raise_for_status()
    page.context.clear_cookies()
    log_in(watched, owner)
    page.goto(world["base"] + "/dashboard/metrics/gpu_seconds")
    page.get_by_role("button", name="Check again and release what passes").click()
    expect(page.locator("[role=status]")).to_contain_text("Released 1 event(s); 1 still break")
    expect(page.locator("table tbody tr")).to_have_count(1)
    assert "gpu-negative" in page.locator("table tbody tr").inner_text()
    watched.shot("metric-released")
    watched.clean()


def test_a_correction_page_previews_then_its_owner_applies_and_the_adjustment_is_listed(
    watched, world
):
    admin, base = world["admin"], world["base"]
    start = LAST_MONTH + timedelta(days=3)
    opened = admin.post(
        base + "/v1/corrections",
        json={
            "metric_key": "api_calls",
            "customer_id": "cust_console",
            "from": start.isoformat(),
            "to": (start + timedelta(hours=1)).isoformat(),
            "mode": "replace",
            "reason": "the gateway double-counted retries for an hour",
        },
        timeout=10,
    ).json()
    posted = admin.post(
        base + f"/v1/corrections/{opened['id']}/events",
        json={
            "events": [
                {
                    "customer_id": "cust_console",
                    "metric_key": "api_calls",
                    "value": 4,
                    "timestamp": (start + timedelta(minutes=30)).isoformat(),
                    "idempotency_key": "console-fix-1",
                }
            ]
        },
        timeout=10,
    ).json()
    assert posted["accepted"] == 1
    (expected,) = admin.get(base + f"/v1/corrections/{opened['id']}/preview", timeout=10).json()[
        "periods"
    ]
    assert expected["carried_by"] == "adjustment"
    # A read-only session sees the preview and may not apply.
    log_in(watched, world["read_key"])
    page = watched.page
    page.goto(base + "/dashboard/corrections")
    page.get_by_role("link", name=opened["id"]).click()
    row = page.locator("table tbody tr").first
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "cust_console"
    assert cells[2:7] == [
        expected["old_quantity"],
        expected["new_quantity"],
        expected["old_amount"],
        expected["new_amount"],
        expected["amount_difference"],
    ], cells
    assert world["invoice"]["number"] in cells[7]
    assert page.get_by_role("button", name="Apply").is_disabled()
    watched.shot("correction-preview")
    # An admin applies it from the console; the adjustment is listed with its checksums.
    page.context.clear_cookies()
    log_in(watched, ADMIN_SECRET)
    page.goto(base + f"/dashboard/corrections/{opened['id']}")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("[role=status]")).to_contain_text("Applied: 1 adjustment(s)")
    expect(page.locator(".badge")).to_have_text("applied")
    listed = page.locator("table tbody tr")
    expect(listed).to_have_count(1)
    assert f"Correction {opened['id']}" in listed.inner_text()
    adjustments = admin.get(base + "/v1/adjustments?customer_id=cust_console", timeout=10).json()
    (made,) = [a for a in adjustments["data"] if a["correction_id"] == opened["id"]]
    assert made["amount_delta"] == expected["amount_difference"]
    assert page.get_by_role("button", name="Revert").is_enabled()
    watched.shot("correction-applied")
    # The events explorer says which events the correction superseded, and which counts.
    window = f"&from={start.isoformat()}&to={(start + timedelta(hours=1)).isoformat()}"
    page.goto(
        base
        + "/dashboard/events?customer_id=cust_console&metric_key=api_calls"
        + window.replace("+", "%2B")
    )
    rows = page.locator("table tbody tr").all_inner_texts()
    superseded = [r for r in rows if f"superseded by correction {opened['id']}" in r]
    assert len(superseded) >= 12 and any("console-fix-1" in r and "yes" in r for r in rows), rows
    watched.clean()


def test_a_billing_month_shows_terms_discounts_and_a_plan_change(watched, world):
    post = world["post"]
    post(
        "/v1/price-plans",
        {
            "code": "deal",
            "name": "Deal",
            "currency": "USD",
            "interval": "month",
            "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
            "minimum_commitment": "50",
        },
    )
    post("/v1/customers", {"id": "cust_deal", "name": "Deal Corp", "currency": "USD"})
    subscription = post(
        "/v1/subscriptions",
        {"customer_id": "cust_deal", "plan_code": "deal", "starts_at": THIS_MONTH.isoformat()},
    )
    post(
        "/v1/coupons",
        {
            "code": "welcome10",
            "name": "Welcome",
            "percent_off": "10",
            "duration": "forever",
            "max_redemptions": 10,
        },
    )
    post(f"/v1/subscriptions/{subscription['id']}/discounts", {"coupon_code": "welcome10"})
    draft = post(
        "/v1/invoices",
        {
            "subscription_id": subscription["id"],
            "period_start": THIS_MONTH.isoformat(),
            "period_end": (THIS_MONTH + relativedelta(months=1)).isoformat(),
        },
    )
    # No usage yet: the minimum 50 as a true-up, 10% off it: 45.
    assert [(line["type"], line["amount"]) for line in draft["lines"]] == [
        ("usage", "0"),
        ("commitment", "50"),
        ("discount", "-5"),
    ]
    changed = post(
        f"/v1/subscriptions/{subscription['id']}/change",
        {"plan_code": "pro", "effective": "period_end"},
    )

    log_in(watched, world["read_key"])
    page = watched.page
    page.goto(f"{world['base']}/dashboard/coupons")
    row = page.locator("tr#welcome10")
    expect(row).to_contain_text("10%")
    expect(row).to_contain_text("1 of 10")
    expect(row).to_contain_text("forever")
    watched.shot("coupons")
    page.goto(f"{world['base']}/dashboard/customers/cust_deal")
    old_row = page.locator(f"tr#{subscription['id']}")
    expect(old_row.locator("td.terms")).to_contain_text("minimum 50.00 USD")
    expect(old_row.locator("td.discounts")).to_contain_text("welcome10")
    expect(old_row).to_contain_text("plan changed")
    new_row = page.locator(f"tr#{changed['id']}")
    expect(new_row).to_contain_text(f"replaces {subscription['id']}")
    expect(new_row.locator("td.discounts")).to_contain_text("welcome10")  # carried over
    watched.shot("customer-terms")
    page.goto(f"{world['base']}/dashboard/invoices/{draft['id']}")
    body = page.locator("tbody").first
    expect(body).to_contain_text("minimum commitment")
    expect(body).to_contain_text("Welcome (10% off)")
    assert page.get_by_role("link", name="welcome10").count() == 1
    watched.shot("invoice-terms")
    watched.clean()
