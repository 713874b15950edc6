"""A thin client over the real `api` app for catalog tests."""

from __future__ import annotations

from typing import Any

from functions_framework import create_app

from tests.conftest import PROJECT_ROOT, bearer

MAIN = str(PROJECT_ROOT / "functions" / "main.py")

METRIC = {
    "key": "api_calls",
    "name": "API calls",
    "unit": "call",
    "aggregation": "sum",
    "effective_from": "2026-01-01T00:00:00Z",
}
PLAN = {
    "code": "pro",
    "name": "Pro",
    "currency": "USD",
    "interval": "month",
    "charges": [
        {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.001"},
        {"model": "flat_fee", "name": "Platform fee", "amount": "99.00"},
    ],
}
CUSTOMER = {
    "id": "cust_acme",
    "name": "Acme Inc",
    "email": "billing@acme.test",
    "currency": "USD",
    "region": "eu-west-1",
    "billing_provider": "stripe",
    "provider_customer_id": "cus_123",
    "payment_method": "pm_card_visa",
    "metadata": {"tier": "gold"},
}


class Api:
    def __init__(self, secret: str) -> None:
        self.client = create_app(target="api", source=MAIN).test_client()
        self.headers = bearer(secret)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int,
        code: str | None = None,
        **headers: str,
    ) -> Any:
        response = self.client.open(
            path, method=method, json=body, headers={**self.headers, **headers}
        )
        assert response.status_code == expect, response.get_data(as_text=True)
        payload = response.get_json(force=True, silent=True)
        if code is not None:
            assert response.content_type == "application/problem+json"
            assert payload["code"] == code, payload
        return payload

    def post(
        self, path: str, body: Any, *, expect: int = 201, code: str | None = None, **headers: str
    ) -> Any:
        return self.call("POST", path, body, expect=expect, code=code, **headers)

    def get(self, path: str, *, expect: int = 200, code: str | None = None) -> Any:
        return self.call("GET", path, expect=expect, code=code)

    def patch(self, path: str, body: Any, *, expect: int = 200, code: str | None = None) -> Any:
        return self.call("PATCH", path, body, expect=expect, code=code)

    def delete(self, path: str, *, expect: int = 200, code: str | None = None) -> Any:
        return self.call("DELETE", path, expect=expect, code=code)

    def customer(self, customer_id: str) -> str:
        """Another customer like the seeded one (a customer holds one subscription per
        metric at a time: more subscriptions on the plan need more customers)."""
        self.post("/v1/customers", {**CUSTOMER, "id": customer_id})
        return customer_id

    def seed(self) -> dict[str, Any]:
        """A metric, a plan on it, a customer and a subscription."""
        self.post("/v1/metrics", METRIC)
        self.post("/v1/price-plans", PLAN)
        self.post("/v1/customers", CUSTOMER)
        return self.post(
            "/v1/subscriptions",
            {"customer_id": "cust_acme", "plan_code": "pro", "starts_at": "2026-03-01T00:00:00Z"},
        )
