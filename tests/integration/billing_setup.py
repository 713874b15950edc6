"""Shared setup for the invoicing tests: a sum metric, a plan (per_unit 0.01 + a flat fee
of 10), a customer and a monthly subscription from June 2026 with 300 June events."""

from datetime import UTC, datetime, timedelta

import pytest
from functions_framework import create_app

from core.services import aggregation, api_keys, ingest
from core.services.caller import SYSTEM
from tests.conftest import bearer
from tests.fixtures.samples import create_metric
from tests.integration.catalog_client import MAIN, Api

JUNE, JULY, AUGUST = (datetime(2026, m, 1, tzinfo=UTC) for m in (6, 7, 8))
NOW = datetime(2026, 8, 20, tzinfo=UTC)


def _event(key, day, value="1", customer="cust_acme"):
    return {
        "customer_id": customer,
        "metric_key": "api_calls",
        "value": value,
        "timestamp": (JUNE + timedelta(days=day, hours=3)).isoformat(),
        "idempotency_key": key,
    }


class Client:
    def __init__(self):
        secret = api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret
        self.api = Api(secret)
        self.invoice = create_app(target="invoice", source=MAIN).test_client()
        self.calculate = create_app(target="calculate", source=MAIN).test_client()
        self.headers = bearer(secret)

    def call(self, method, path, body=None, expect=200):
        response = self.invoice.open(path, method=method, json=body, headers=self.headers)
        assert response.status_code == expect, response.get_data(as_text=True)
        return response.get_json()

    def draft(self, subscription_id, start=JUNE, end=JULY, expect=201):
        body = {
            "subscription_id": subscription_id,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
        }
        return self.call("POST", "/v1/invoices", body, expect)


@pytest.fixture
def billing(db):
    create_metric("api_calls")
    client = Client()
    client.api.post(
        "/v1/price-plans",
        {
            "code": "basic",
            "name": "Basic",
            "currency": "USD",
            "interval": "month",
            "charges": [
                {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.01"},
                {"model": "flat_fee", "name": "Platform fee", "amount": "10"},
            ],
        },
    )
    client.api.post("/v1/customers", {"id": "cust_acme", "name": "Acme", "currency": "USD"})
    subscription = client.api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "basic", "starts_at": JUNE.isoformat()},
    )
    ingest.ingest([_event(f"e{n}", n % 30) for n in range(300)], now=NOW)
    aggregation.drain()
    return client, subscription["id"]
