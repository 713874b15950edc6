"""Price-change simulation (API.md §11, `POST /v1/price-plans/{code}/simulate`): candidate
charges priced over the last N invoiced periods of every subscription on the plan, from
the same exact usage and pricing as invoices, against what was billed; nothing stored."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.services import aggregation, api_keys, ingest
from core.services.caller import SYSTEM
from core.services.invoicing import lifecycle
from tests.fixtures.samples import create_metric
from tests.integration.catalog_client import Api

MONTHS = [datetime(2026, m, 1, tzinfo=UTC) for m in (7, 8, 9, 10, 11)]
NOW = datetime(2026, 11, 20, tzinfo=UTC)
CURRENT = [
    {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.01"},
    {"model": "flat_fee", "name": "Platform", "amount": "10.00"},
]


def _counts() -> tuple[int, int, int]:
    with get_database().transaction() as connection:
        return tuple(  # type: ignore[return-value]
            connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("calculations", "invoices", "adjustments")
        )


@pytest.fixture
def billed(db):
    """Two customers on plan `pro` from July; `cust_vip` with a unit-price override; July to
    October invoiced and issued from random usage."""
    create_metric("api_calls")
    api = Api(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)
    api.post(
        "/v1/price-plans",
        {"code": "pro", "name": "Pro", "currency": "USD", "interval": "month", "charges": CURRENT},
    )
    subscriptions = {}
    for customer, overrides in (
        ("cust_std", []),
        ("cust_vip", [{"metric_key": "api_calls", "unit_price": "0.008"}]),
    ):
        api.post("/v1/customers", {"id": customer, "name": customer, "currency": "USD"})
        subscriptions[customer] = api.post(
            "/v1/subscriptions",
            {
                "customer_id": customer,
                "plan_code": "pro",
                "starts_at": MONTHS[0].isoformat(),
                "overrides": overrides,
            },
        )["id"]
    generator = random.Random(20261206)
    usage: dict[tuple[str, int], int] = {}
    for customer in subscriptions:
        for month in range(4):
            values = [generator.randint(1, 500) for _ in range(generator.randint(1, 6))]
            usage[(customer, month)] = sum(values)
            ingest.ingest(
                [
                    {
                        "customer_id": customer,
                        "metric_key": "api_calls",
                        "value": str(value),
                        "timestamp": (MONTHS[month] + timedelta(days=2, hours=i)).isoformat(),
                        "idempotency_key": f"{customer}-{month}-{i}",
                    }
                    for i, value in enumerate(values)
                ],
                now=NOW,
            )
    aggregation.drain()
    invoices = {}
    for customer, subscription in subscriptions.items():
        for month in range(4):
            draft, _ = lifecycle.create_draft(
                SYSTEM, subscription, MONTHS[month], MONTHS[month + 1]
            )
            invoices[(customer, month)] = lifecycle.issue(SYSTEM, draft["id"])
    return {"api": api, "usage": usage, "invoices": invoices, "subscriptions": subscriptions}


def _simulate(api: Api, charges, periods=3, expect=200, code=None):
    return api.post(
        "/v1/price-plans/pro/simulate",
        {"charges": charges, "periods": periods},
        expect=expect,
        code=code,
    )


def test_the_current_charges_reproduce_what_was_billed_exactly(billed):
    before = _counts()
    result = _simulate(billed["api"], CURRENT, periods=3)
    assert _counts() == before  # nothing stored
    assert result["plan_code"] == "pro" and result["currency"] == "USD"
    assert [c["customer_id"] for c in result["customers"]] == ["cust_std", "cust_vip"]
    for customer in result["customers"]:
        # the latest three invoiced periods of each subscription: August to October
        starts = [p["period"]["start"] for p in customer["periods"]]
        assert starts == [m.isoformat().replace("+00:00", "Z") for m in MONTHS[1:4]]
        for period in customer["periods"]:
            month = MONTHS.index(datetime.fromisoformat(period["period"]["start"]))
            invoice = billed["invoices"][(customer["customer_id"], month)]
            assert period["invoice_id"] == invoice["id"]
            assert D(period["invoiced"]) == D(invoice["total"])
            assert D(period["simulated"]) == D(period["billed"]) == D(invoice["total"])
            assert D(period["delta"]) == 0
    assert D(result["total"]["delta"]) == 0
    assert D(result["total"]["billed"]) == sum(
        D(billed["invoices"][(c, m)]["total"]) for c in billed["subscriptions"] for m in (1, 2, 3)
    )


def test_a_candidate_price_gives_the_hand_computed_deltas(billed):
    candidate = [
        {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.02"},
        {"model": "flat_fee", "name": "Platform", "amount": "12.00"},
    ]
    result = _simulate(billed["api"], candidate, periods=2)
    usage = billed["usage"]
    for customer in result["customers"]:
        name = customer["customer_id"]
        # the VIP override (0.008 per call) names api_calls: it still applies
        unit = D("0.008") if name == "cust_vip" else D("0.02")
        old_unit = D("0.008") if name == "cust_vip" else D("0.01")
        assert len(customer["periods"]) == 2  # September and October
        for period, month in zip(customer["periods"], (2, 3), strict=True):
            calls = usage[(name, month)]
            assert D(period["billed"]) == (calls * old_unit + D(10)).quantize(D("0.01"))
            assert D(period["simulated"]) == (calls * unit + D(12)).quantize(D("0.01"))
            assert D(period["delta"]) == D(period["simulated"]) - D(period["billed"])
        assert D(customer["delta"]) == sum(D(p["delta"]) for p in customer["periods"])
    assert D(result["total"]["delta"]) == sum(D(c["delta"]) for c in result["customers"])


def test_late_usage_is_part_of_what_was_billed(billed):
    # a late September event for cust_std: an adjustment of that period, then simulated
    ingest.ingest(
        [
            {
                "customer_id": "cust_std",
                "metric_key": "api_calls",
                "value": "1000",
                "timestamp": (MONTHS[2] + timedelta(days=9)).isoformat(),
                "idempotency_key": "late-september",
            }
        ],
        now=NOW,
    )
    aggregation.drain()
    result = _simulate(billed["api"], CURRENT, periods=3)
    (std,) = [c for c in result["customers"] if c["customer_id"] == "cust_std"]
    september = std["periods"][1]
    assert D(september["adjusted"]) == D("10.00")  # 1000 calls at 0.01
    assert D(september["billed"]) == D(september["invoiced"]) + D("10.00")
    assert D(september["simulated"]) == D(september["billed"]) and D(september["delta"]) == 0


def test_clear_refusals(billed):
    api = billed["api"]
    assert (
        api.post("/v1/price-plans/nope/simulate", {"charges": CURRENT}, expect=404)["code"]
        == "unknown_plan"
    )
    unknown = _simulate(
        api, [{"metric_key": "nope", "model": "per_unit", "unit_price": "1"}], expect=422
    )
    assert unknown["code"] == "unknown_metric"
    _simulate(api, CURRENT, periods=13, expect=422)
    _simulate(api, [], expect=422)
    twice = _simulate(
        api,
        [
            {"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"},
            {"metric_key": "api_calls", "model": "per_unit", "unit_price": "2"},
        ],
        expect=422,
    )
    assert "distinct names" in str(twice)
    reader = Api(api_keys.create_key(SYSTEM, name="reader", scopes=["read"]).secret)
    assert (
        reader.post("/v1/price-plans/pro/simulate", {"charges": CURRENT, "periods": 1}, expect=200)[
            "periods"
        ]
        == 1
    )  # a read: nothing changes
