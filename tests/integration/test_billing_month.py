"""A real billing month (API.md §11, §12): plan changes split at the instant, no two
subscriptions charging one metric over overlapping time, trials, commitments, coupons.

Every example is worked by hand in its comments. Plan changes and redemptions happen "now"
or later, so the examples live in future periods: events are ingested with a `now` after
them, and invoices are drafted for those periods through the invoice API.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from dateutil.relativedelta import relativedelta

from core.config import reload_settings
from core.services import aggregation, audit, ingest, notify
from tests.contract.http_servers import Recorder, serve
from tests.fixtures.samples import create_metric
from tests.integration.billing_setup import Client


def _thirty_day_month(after: datetime) -> datetime:
    """The first 30-day month starting after `after` (so "day 10 of 30" is literal)."""
    month = datetime(after.year, after.month, 1, tzinfo=UTC) + relativedelta(months=1)
    while (month + relativedelta(months=1) - month).days != 30:
        month += relativedelta(months=1)
    return month


START = _thirty_day_month(datetime.now(UTC) + timedelta(days=1))
END = START + timedelta(days=30)
LATER = END + timedelta(days=60)  # "now" for ingesting the examples' events


def _plan(code: str, charges: list[dict[str, Any]], **terms: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": code.capitalize(),
        "currency": "USD",
        "interval": "month",
        "charges": charges,
        **terms,
    }


def _tiered(first: str, rest: str, up_to: str) -> dict[str, Any]:
    return {
        "metric_key": "api_calls",
        "model": "tiered",
        "tiers": [
            {"up_to": up_to, "unit_price": first},
            {"up_to": None, "unit_price": rest},
        ],
    }


def _fee(amount: str) -> dict[str, Any]:
    return {"model": "flat_fee", "name": "Platform fee", "amount": amount}


def _events(customer: str, at: datetime, count: int, prefix: str) -> None:
    outcomes = ingest.ingest(
        [
            {
                "customer_id": customer,
                "metric_key": "api_calls",
                "timestamp": (at + timedelta(minutes=n % 600)).isoformat(),
                "idempotency_key": f"{prefix}-{n}",
            }
            for n in range(count)
        ],
        now=LATER,
    )
    assert {o.outcome for o in outcomes} == {"accepted"}


@pytest.fixture
def month(db):
    create_metric("api_calls")
    create_metric("storage_gb")
    client = Client()
    client.api.post(
        "/v1/price-plans", _plan("starter", [_tiered("0.10", "0.05", "100"), _fee("30")])
    )
    client.api.post(
        "/v1/price-plans", _plan("growth", [_tiered("0.08", "0.04", "1000"), _fee("90")])
    )
    return client


def _customer(client: Client, customer_id: str) -> str:
    client.api.post("/v1/customers", {"id": customer_id, "name": customer_id, "currency": "USD"})
    return customer_id


def _subscribe(client: Client, customer: str, plan: str, starts: datetime, **extra: Any) -> Any:
    return client.api.post(
        "/v1/subscriptions",
        {"customer_id": customer, "plan_code": plan, "starts_at": starts.isoformat(), **extra},
    )


def _amounts(invoice: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (line.get("charge") or line.get("kind") or line.get("coupon_code"), line["amount"])
        for line in invoice["lines"]
    ]


# -- plan changes ---------------------------------------------------------------------------


def test_an_upgrade_on_day_10_of_30_prices_each_side_under_its_own_plan(month):
    client = month
    customer = _customer(client, "cust_up")
    old = _subscribe(client, customer, "starter", START)
    change_at = START + timedelta(days=9)  # day 10 begins
    # 150 calls on days 1-9, 1,200 from day 10 (the first at the change instant itself)
    _events(customer, START + timedelta(days=2), 150, "before")
    _events(customer, change_at, 1200, "after")
    aggregation.drain()

    new = client.api.post(
        f"/v1/subscriptions/{old['id']}/change",
        {"plan_code": "growth", "effective": change_at.isoformat()},
        expect=200,
    )
    assert new["previous_subscription_id"] == old["id"]
    assert (new["plan_code"], new["plan_version"], new["starts_at"]) == (
        "growth",
        1,
        change_at.isoformat().replace("+00:00", "Z"),
    )
    # The same billing period on both sides: the anchor is kept.
    assert new["current_period"] == {
        "start": START.isoformat().replace("+00:00", "Z"),
        "end": END.isoformat().replace("+00:00", "Z"),
    }
    ended = client.api.get(f"/v1/subscriptions/{old['id']}")
    assert ended["ends_at"] == new["starts_at"] and ended["changed_at"] is not None
    assert ended["canceled_at"] is None

    # Old side, [day 1, day 10): tiers applied to its own 150 calls:
    # 100 x 0.10 + 50 x 0.05 = 12.50; the fee 30 x 9/30 = 9.00.
    before = client.draft(old["id"], START, change_at)
    assert _amounts(before) == [("api_calls", "12.5"), ("Platform fee", "9")]
    assert before["total"] == "21.5"
    # New side, [day 10, day 31): 1,000 x 0.08 + 200 x 0.04 = 88; the fee 90 x 21/30 = 63.
    after = client.draft(new["id"], START, END)
    assert _amounts(after) == [("api_calls", "88"), ("Platform fee", "63")]
    assert after["total"] == "151"
    fee_rows = after["lines"][1]["breakdown"][0]
    assert (fee_rows["covered_days"], fee_rows["period_days"]) == (21, 30)

    # One audited operation, naming both subscriptions.
    listed, _ = audit.list_entries(
        entity="subscription", entity_id=old["id"], cursor=None, limit=100
    )
    entries = [e for e in listed if e["action"] == "subscription.changed"]
    assert len(entries) == 1 and entries[0]["entity_id"] == old["id"]
    assert entries[0]["changes"]["plan"] == {"before": "starter v1", "after": "growth v1"}
    # Changed once: the ended subscription cannot be changed again.
    client.api.post(
        f"/v1/subscriptions/{old['id']}/change",
        {"plan_code": "growth"},
        expect=409,
        code="already_canceled",
    )


def test_a_change_at_period_end_or_immediately_and_its_announcement(month, monkeypatch):
    client = month
    customer = _customer(client, "cust_now")
    now = datetime.now(UTC)
    current = datetime(now.year, now.month, 1, tzinfo=UTC)
    old = _subscribe(client, customer, "starter", current)
    recorder = Recorder()
    with serve(recorder) as sink:
        monkeypatch.setenv("K_SINK", sink)
        reload_settings()
        monkeypatch.setattr(notify, "_bus", None)
        try:
            scheduled = client.api.post(
                f"/v1/subscriptions/{old['id']}/change",
                {"plan_code": "growth", "effective": "period_end"},
                expect=200,
            )
        finally:
            monkeypatch.delenv("K_SINK")
            reload_settings()
            notify._bus = None
    next_month = (current + relativedelta(months=1)).isoformat().replace("+00:00", "Z")
    assert (scheduled["status"], scheduled["starts_at"]) == ("scheduled", next_month)
    ((headers, body),) = recorder.received
    assert (headers.get("Ce-Type") or headers.get("ce-type")) == (
        "dev.abaxus.subscription.changed.v1"
    )
    announced = json.loads(body)
    assert announced == {
        "subscription_id": scheduled["id"],
        "previous_subscription_id": old["id"],
        "customer_id": customer,
        "plan_code": "growth",
        "plan_version": 1,
        "previous_plan_code": "starter",
        "previous_plan_version": 1,
        "effective_at": (current + relativedelta(months=1)).isoformat(),
    }

    other = _subscribe(client, _customer(client, "cust_immediate"), "starter", current)
    immediate = client.api.post(
        f"/v1/subscriptions/{other['id']}/change", {"plan_code": "growth"}, expect=200
    )
    assert immediate["status"] == "active"
    assert client.api.get(f"/v1/subscriptions/{other['id']}")["status"] == "ended"
    # A change in the past or outside the subscription's time is refused.
    third = _subscribe(client, _customer(client, "cust_third"), "starter", current)
    for effective in ((now - timedelta(days=1)).isoformat(), "2099-13-01"):
        client.api.post(
            f"/v1/subscriptions/{third['id']}/change",
            {"plan_code": "growth", "effective": effective},
            expect=422,
        )
    client.api.post(
        f"/v1/subscriptions/{third['id']}/change",
        {"plan_code": "nope"},
        expect=422,
        code="unknown_plan",
    )
    client.api.post("/v1/subscriptions/sub_nope/change", {"plan_code": "growth"}, expect=404)


# -- no double billing by overlap ---------------------------------------------------------


def test_two_subscriptions_charging_one_metric_over_overlapping_time_are_refused(month):
    client = month
    customer = _customer(client, "cust_twice")
    first = _subscribe(client, customer, "starter", START)
    refused = client.api.post(
        "/v1/subscriptions",
        {"customer_id": customer, "plan_code": "growth", "starts_at": END.isoformat()},
        expect=409,
        code="overlapping_subscription",
    )
    assert "overlapping" in refused["detail"]
    # A plan that charges another metric overlaps nothing.
    client.api.post(
        "/v1/price-plans",
        _plan("storage", [{"metric_key": "storage_gb", "model": "per_unit", "unit_price": "1"}]),
    )
    _subscribe(client, customer, "storage", START)
    # Once the first ends, a subscription from that instant on is accepted.
    client.api.post(f"/v1/subscriptions/{first['id']}/cancel", {"at": END.isoformat()}, expect=200)
    after = _subscribe(client, customer, "growth", END)
    assert after["starts_at"] == END.isoformat().replace("+00:00", "Z")
    # ...and one before it, overlapping its end, is not.
    client.api.post(
        "/v1/subscriptions",
        {
            "customer_id": customer,
            "plan_code": "growth",
            "starts_at": (END - timedelta(days=1)).isoformat(),
        },
        expect=409,
        code="overlapping_subscription",
    )


def test_concurrent_creations_for_one_customer_and_metric_leave_one(month):
    client = month
    customer = _customer(client, "cust_race")
    results: list[int] = []
    barrier = threading.Barrier(10)

    def create() -> None:
        barrier.wait()
        response = client.api.client.post(
            "/v1/subscriptions",
            json={"customer_id": customer, "plan_code": "starter", "starts_at": START.isoformat()},
            headers=client.api.headers,
        )
        results.append(response.status_code)

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] + [409] * 9
    listed = client.api.get(f"/v1/subscriptions?customer_id={customer}")["data"]
    assert len(listed) == 1


# -- trials -------------------------------------------------------------------------------


def test_a_14_day_trial_bills_no_fee_and_no_usage_until_it_ends(month):
    client = month
    customer = _customer(client, "cust_trial")
    sub = _subscribe(client, customer, "starter", START, trial_days=14)
    trial_end = START + timedelta(days=14)
    assert sub["trial_ends_at"] == trial_end.isoformat().replace("+00:00", "Z")
    _events(customer, START + timedelta(days=3), 80, "trial")  # during the trial: free
    _events(customer, trial_end + timedelta(days=1), 120, "paid")
    aggregation.drain()
    invoice = client.draft(sub["id"], START, END)
    # 120 calls after the trial: 100 x 0.10 + 20 x 0.05 = 11; the fee 30 x 16/30 = 16.
    assert _amounts(invoice) == [("api_calls", "11"), ("Platform fee", "16")]
    # Its events are the 120 billed ones.
    calculation = client.calculate.get(
        f"/v1/pricing/calculations/{invoice['calculation_id']}/lines/1/events?limit=500",
        headers=client.headers,
    ).get_json()
    assert len(calculation["data"]) == 120
    assert calculation_trial(client, invoice) == {
        "ends_at": trial_end.isoformat().replace("+00:00", "Z"),
        "bills_usage": False,
    }


def calculation_trial(client: Client, invoice: dict[str, Any]) -> Any:
    found = client.calculate.get(
        f"/v1/pricing/calculations/{invoice['calculation_id']}", headers=client.headers
    ).get_json()
    return found.get("trial")


def test_a_plan_with_trial_bills_usage_bills_usage_during_the_trial(month):
    client = month
    client.api.post(
        "/v1/price-plans",
        _plan(
            "metered",
            [_tiered("0.10", "0.05", "100"), _fee("30")],
            trial_days=10,
            trial_bills_usage=True,
        ),
    )
    customer = _customer(client, "cust_metered")
    sub = _subscribe(client, customer, "metered", START)
    _events(customer, START + timedelta(days=1), 50, "m")
    aggregation.drain()
    invoice = client.draft(sub["id"], START, END)
    # All 50 calls billed (5.00); the fee 30 x 20/30 = 20.
    assert _amounts(invoice) == [("api_calls", "5"), ("Platform fee", "20")]


def test_a_plan_change_ends_a_trial_early(month):
    client = month
    customer = _customer(client, "cust_convert")
    trial = _subscribe(client, customer, "starter", START, trial_days=14)
    converted_at = START + timedelta(days=5)
    _events(customer, START + timedelta(days=1), 40, "free")
    _events(customer, converted_at + timedelta(hours=1), 10, "billed")
    aggregation.drain()
    paid = client.api.post(
        f"/v1/subscriptions/{trial['id']}/change",
        {"plan_code": "growth", "effective": converted_at.isoformat()},
        expect=200,
    )
    assert paid["trial_ends_at"] is None
    # The trial side bills nothing: no fee, no usage.
    trial_side = client.draft(trial["id"], START, converted_at)
    assert trial_side["total"] == "0"
    # The paid side from day 6: 10 x 0.08 = 0.80; the fee 90 x 25/30 = 75.
    paid_side = client.draft(paid["id"], START, END)
    assert _amounts(paid_side) == [("api_calls", "0.8"), ("Platform fee", "75")]


# -- commitments --------------------------------------------------------------------------


def test_a_minimum_commitment_with_usage_below_and_above_it(month):
    client = month
    client.api.post(
        "/v1/price-plans",
        _plan(
            "committed",
            [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
            minimum_commitment="500.00",
        ),
    )
    below = _subscribe(client, _customer(client, "cust_below"), "committed", START)
    above = _subscribe(client, _customer(client, "cust_above"), "committed", START)
    _events("cust_below", START + timedelta(days=1), 300, "below")
    _events("cust_above", START + timedelta(days=1), 700, "above")
    aggregation.drain()
    low = client.draft(below["id"], START, END)
    # 300 of usage; the minimum 500: a true-up of 200.
    assert _amounts(low) == [("api_calls", "300"), ("minimum_commitment", "200")]
    assert low["lines"][1]["commitment"] == "500" and low["total"] == "500"
    high = client.draft(above["id"], START, END)
    assert _amounts(high) == [("api_calls", "700")] and high["total"] == "700"


def test_a_maximum_charge_caps_and_both_are_prorated_for_a_partial_period(month):
    client = month
    client.api.post(
        "/v1/price-plans",
        _plan(
            "capped",
            [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
            minimum_commitment="300",
            maximum_charge="600",
        ),
    )
    capped = _subscribe(client, _customer(client, "cust_cap"), "capped", START)
    _events("cust_cap", START + timedelta(days=1), 900, "cap")
    # A subscription overriding the minimum, starting on day 10 of 30 (21 days covered):
    # its minimum 500 x 21/30 = 350 against 100 of usage: a true-up of 250.
    late = _subscribe(
        client,
        _customer(client, "cust_late"),
        "capped",
        START + timedelta(days=9),
        minimum_commitment="500",
    )
    assert late["minimum_commitment"] == "500"
    _events("cust_late", START + timedelta(days=12), 100, "late")
    aggregation.drain()
    invoice = client.draft(capped["id"], START, END)
    # 900 of usage capped at 600: a cap line of -300.
    assert _amounts(invoice) == [("api_calls", "900"), ("maximum_charge", "-300")]
    assert invoice["total"] == "600"
    partial = client.draft(late["id"], START, END)
    assert _amounts(partial) == [("api_calls", "100"), ("minimum_commitment", "250")]
    assert partial["lines"][1]["commitment"] == "350"
    assert "prorated for 21 of 30 days" in partial["lines"][1]["description"]
    # Incoherent terms are refused: a maximum below the minimum.
    client.api.post(
        "/v1/subscriptions",
        {
            "customer_id": _customer(client, "cust_bad"),
            "plan_code": "capped",
            "maximum_charge": "100",
        },
        expect=422,
        code="invalid_terms",
    )


# -- coupons and discounts ----------------------------------------------------------------


def _flat_plan(client: Client) -> None:
    client.api.post(
        "/v1/price-plans",
        _plan(
            "flat",
            [
                {"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"},
                {"model": "flat_fee", "name": "Platform fee", "amount": "100"},
            ],
        ),
    )


def test_a_3_period_20_percent_coupon_across_four_invoices(month):
    client = month
    _flat_plan(client)
    coupon = client.api.post(
        "/v1/coupons",
        {
            "code": "launch20",
            "name": "Launch",
            "percent_off": "20",
            "duration": "repeating",
            "duration_periods": 3,
        },
    )
    assert (coupon["times_redeemed"], coupon["duration_periods"]) == (0, 3)
    now = datetime.now(UTC)
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    sub = _subscribe(client, _customer(client, "cust_coupon"), "flat", first)
    discount = client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts", {"coupon_code": "launch20"}, expect=201
    )
    assert (discount["periods"], discount["first_period_start"]) == (
        3,
        first.isoformat().replace("+00:00", "Z"),
    )
    assert client.api.get("/v1/coupons/launch20")["times_redeemed"] == 1
    totals = []
    for index in range(4):
        start = first + relativedelta(months=index)
        invoice = client.draft(sub["id"], start, start + relativedelta(months=1))
        totals.append(invoice["total"])
        if index < 3:
            assert _amounts(invoice) == [
                ("api_calls", "0"),
                ("Platform fee", "100"),
                ("launch20", "-20"),
            ]
            line = invoice["lines"][2]
            assert (line["type"], line["discount_id"]) == ("discount", discount["id"])
            assert line["description"] == "Launch (20% off)"
            document = client.invoice.get(
                f"/v1/invoices/{invoice['id']}.html", headers=client.headers
            ).get_data(as_text=True)
            assert "Launch (20% off)" in document and "Discount · coupon launch20" in document
        else:
            assert [line["type"] for line in invoice["lines"]] == ["usage", "usage"]
    assert totals == ["80", "80", "80", "100"]


def test_discounts_stack_in_redemption_order_and_never_go_below_zero(month):
    client = month
    _flat_plan(client)
    for coupon in (
        {
            "code": "calls50",
            "name": "Half calls",
            "percent_off": "50",
            "applies_to": {"metric_keys": ["api_calls"]},
        },
        {"code": "ten", "name": "Ten off", "amount_off": "10", "currency": "USD"},
        {"code": "huge", "name": "Huge", "amount_off": "1000", "currency": "USD"},
    ):
        client.api.post("/v1/coupons", {**coupon, "duration": "forever"})
    now = datetime.now(UTC)
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    sub = _subscribe(client, _customer(client, "cust_stack"), "flat", first)
    for code in ("calls50", "ten"):
        client.api.post(
            f"/v1/subscriptions/{sub['id']}/discounts", {"coupon_code": code}, expect=201
        )
    start = first + relativedelta(months=1)
    _events("cust_stack", start + timedelta(days=2), 30, "stack")
    aggregation.drain()
    invoice = client.draft(sub["id"], start, start + relativedelta(months=1))
    # 30 calls + fee 100 = 130; half of the calls: -15 (on api_calls only); then 10 off
    # what is left (115): -10. Total 105.
    assert _amounts(invoice) == [
        ("api_calls", "30"),
        ("Platform fee", "100"),
        ("calls50", "-15"),
        ("ten", "-10"),
    ]
    assert invoice["total"] == "105"
    # A third, bigger than the rest: it takes what is left (105), never more.
    client.api.post(f"/v1/subscriptions/{sub['id']}/discounts", {"coupon_code": "huge"}, expect=201)
    again = client.call("POST", f"/v1/invoices/{invoice['id']}/refresh")
    assert _amounts(again)[-1] == ("huge", "-105") and again["total"] == "0"
    # Redeeming the same coupon twice on one subscription is refused.
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts",
        {"coupon_code": "ten"},
        expect=409,
        code="already_redeemed",
    )


def test_coupon_rules_are_enforced(month):
    client = month
    _flat_plan(client)
    now = datetime.now(UTC)
    sub = _subscribe(client, _customer(client, "cust_rules"), "flat", now)
    client.api.post(
        "/v1/coupons",
        {"code": "eur", "name": "Euro", "amount_off": "5", "currency": "EUR", "duration": "once"},
    )
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts",
        {"coupon_code": "eur"},
        expect=422,
        code="currency_mismatch",
    )
    client.api.post(
        "/v1/coupons",
        {
            "code": "gone",
            "name": "Gone",
            "percent_off": "5",
            "duration": "once",
            "redeem_by": (now + timedelta(seconds=1)).isoformat(),
        },
    )
    client.api.post(
        "/v1/coupons", {"code": "old", "name": "Old", "percent_off": "5", "duration": "once"}
    )
    client.api.delete("/v1/coupons/old")
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts",
        {"coupon_code": "old"},
        expect=409,
        code="coupon_archived",
    )
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts",
        {"coupon_code": "nope"},
        expect=422,
        code="unknown_coupon",
    )
    client.api.post(
        "/v1/coupons",
        {
            "code": "storage",
            "name": "S",
            "percent_off": "5",
            "duration": "once",
            "applies_to": {"metric_keys": ["storage_gb"]},
        },
    )
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts",
        {"coupon_code": "storage"},
        expect=422,
        code="coupon_not_applicable",
    )
    # Bad definitions: both kinds, repeating without periods, a code used twice.
    for bad in (
        {
            "code": "x",
            "name": "X",
            "percent_off": "5",
            "amount_off": "1",
            "currency": "USD",
            "duration": "once",
        },
        {"code": "y", "name": "Y", "percent_off": "5", "duration": "repeating"},
        {"code": "z", "name": "Z", "percent_off": "101", "duration": "once"},
    ):
        client.api.post("/v1/coupons", bad, expect=422)
    client.api.post(
        "/v1/coupons",
        {"code": "old", "name": "Old", "percent_off": "5", "duration": "once"},
        expect=409,
        code="coupon_exists",
    )
    import time

    time.sleep(max(0.0, (now + timedelta(seconds=1.1) - datetime.now(UTC)).total_seconds()))
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts",
        {"coupon_code": "gone"},
        expect=409,
        code="coupon_expired",
    )


def test_concurrent_redemptions_never_exceed_max_redemptions(month):
    client = month
    _flat_plan(client)
    client.api.post(
        "/v1/coupons",
        {
            "code": "five",
            "name": "Five",
            "percent_off": "10",
            "duration": "once",
            "max_redemptions": 5,
        },
    )
    now = datetime.now(UTC)
    subs = [
        _subscribe(client, _customer(client, f"cust_r{n}"), "flat", now)["id"] for n in range(20)
    ]
    results: list[tuple[int, Any]] = []
    barrier = threading.Barrier(len(subs))

    def redeem(sub_id: str) -> None:
        barrier.wait()
        response = client.api.client.post(
            f"/v1/subscriptions/{sub_id}/discounts",
            json={"coupon_code": "five"},
            headers=client.api.headers,
        )
        results.append((response.status_code, response.get_json().get("code")))

    threads = [threading.Thread(target=redeem, args=(s,)) for s in subs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=str) == sorted(
        [(201, None)] * 5 + [(409, "coupon_exhausted")] * 15, key=str
    )
    assert client.api.get("/v1/coupons/five")["times_redeemed"] == 5
    redeemed = sum(len(client.api.get(f"/v1/subscriptions/{s}/discounts")["data"]) for s in subs)
    assert redeemed == 5


def test_a_plan_change_carries_the_discounts_over(month):
    client = month
    client.api.post(
        "/v1/coupons",
        {
            "code": "loyal",
            "name": "Loyal",
            "amount_off": "7",
            "currency": "USD",
            "duration": "forever",
        },
    )
    customer = _customer(client, "cust_loyal")
    old = _subscribe(client, customer, "starter", START)
    client.api.post(
        f"/v1/subscriptions/{old['id']}/discounts", {"coupon_code": "loyal"}, expect=201
    )
    new = client.api.post(
        f"/v1/subscriptions/{old['id']}/change",
        {"plan_code": "growth", "effective": (START + timedelta(days=15)).isoformat()},
        expect=200,
    )
    (carried,) = client.api.get(f"/v1/subscriptions/{new['id']}/discounts")["data"]
    assert carried["coupon_code"] == "loyal" and carried["carried_from"] is not None
    assert client.api.get("/v1/coupons/loyal")["times_redeemed"] == 1  # not a new redemption
    after = client.draft(new["id"], START, END)
    # The fee 90 x 15/30 = 45, no usage; 7 off.
    assert _amounts(after) == [("api_calls", "0"), ("Platform fee", "45"), ("loyal", "-7")]
    assert D(after["total"]) == D("38")


def test_late_usage_goes_through_the_periods_commitment_and_discounts(month):
    client = month
    client.api.post(
        "/v1/price-plans",
        _plan(
            "floor",
            [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
            minimum_commitment="500",
        ),
    )
    customer = _customer(client, "cust_floor")
    sub = _subscribe(client, customer, "floor", START)
    _events(customer, START + timedelta(days=1), 300, "on-time")
    aggregation.drain()
    invoice = client.draft(sub["id"], START, END)
    issued = client.call("POST", f"/v1/invoices/{invoice['id']}/issue")
    assert _amounts(issued) == [("api_calls", "300"), ("minimum_commitment", "200")]

    def adjusted() -> list[tuple[str, str]]:
        listed = client.call("GET", f"/v1/adjustments?customer_id={customer}")["data"]
        return sorted((a["description"].split(" (")[0], a["amount_delta"]) for a in listed)

    # 50 late calls: still under the minimum, which absorbs them (+50 of usage, -50 of
    # true-up): the customer owes nothing more.
    _events(customer, START + timedelta(days=2), 50, "late-1")
    aggregation.drain()
    label = f"{START:%B %Y}"
    assert adjusted() == [
        (f"Commitment and discounts of {label}", "-50"),
        (f"Late usage for {label}", "50"),
    ]
    # 400 more: 750 in all, 250 above the minimum; the true-up is gone (-150 more).
    _events(customer, START + timedelta(days=3), 400, "late-2")
    aggregation.drain()
    found = adjusted()
    assert sum(D(amount) for _, amount in found) == D("250")  # 750 - the 500 invoiced
    assert sorted(amount for _, amount in found) == sorted(["-50", "-150", "50", "400"])


def test_the_simulation_goes_through_commitments_and_discounts_like_invoices(month):
    client = month
    per_unit = {"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}
    client.api.post("/v1/price-plans", _plan("floored", [per_unit], minimum_commitment="500"))
    client.api.post(
        "/v1/coupons",
        {"code": "tenth", "name": "Tenth", "percent_off": "10", "duration": "forever"},
    )
    customer = _customer(client, "cust_sim")
    sub = _subscribe(client, customer, "floored", START)
    client.api.post(
        f"/v1/subscriptions/{sub['id']}/discounts", {"coupon_code": "tenth"}, expect=201
    )
    _events(customer, START + timedelta(days=1), 300, "sim")
    aggregation.drain()
    invoice = client.draft(sub["id"], START, END)
    issued = client.call("POST", f"/v1/invoices/{invoice['id']}/issue")
    # 300 of usage, a true-up of 200 to the minimum 500, 10% off: 450.
    assert _amounts(issued) == [
        ("api_calls", "300"),
        ("minimum_commitment", "200"),
        ("tenth", "-50"),
    ]
    # 400 late: 700 of usage, above the minimum; 10% off: 630 billed in all.
    _events(customer, START + timedelta(days=2), 400, "sim-late")
    aggregation.drain()

    def simulate(unit_price: str) -> Any:
        return client.api.post(
            "/v1/price-plans/floored/simulate",
            {"charges": [{**per_unit, "unit_price": unit_price}], "periods": 1},
            expect=200,
        )

    same = simulate("1")
    (period,) = same["customers"][0]["periods"]
    assert (period["invoiced"], period["adjusted"], period["billed"]) == ("450", "180", "630")
    assert (period["simulated"], period["delta"]) == ("630", "0")
    # At 0.50: 350 of usage under the minimum (true-up 150), 10% off: 450.
    cheaper = simulate("0.5")
    assert (cheaper["total"]["simulated"], cheaper["total"]["delta"]) == ("450", "-180")
