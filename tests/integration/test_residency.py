"""Residency at ingest (API.md §10, issue 19 item 6 — the ingest region's part): with
ABAXUS_ENFORCE_RESIDENCY, events of a customer homed in another residency zone are refused
(421 wrong_region, naming the home region) and stored nowhere; customers of the region's
own zone and customers without a home are taken."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from core.config import reload_settings
from core.services import api_keys
from core.services.caller import SYSTEM
from tests.asgi_client import create_app
from tests.conftest import PROJECT_ROOT, bearer
from tests.fixtures.samples import create_metric
from tests.integration.catalog_client import Api

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def eu_region(db, monkeypatch):
    create_metric("api_calls")
    admin = Api(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)
    for customer, home in (
        ("cust_eu", "eu-central-1"),
        ("cust_us", "us-east-1"),
        ("cust_any", None),
    ):
        body = {"id": customer, "name": customer, "currency": "EUR"}
        if home is not None:
            body["region"] = home
        admin.post("/v1/customers", body)
    monkeypatch.setenv("ABAXUS_REGION", "eu-west-1")
    monkeypatch.setenv("ABAXUS_ENFORCE_RESIDENCY", "true")
    monkeypatch.setenv("ABAXUS_RESIDENCY_ZONES", "eu=eu-west-1,eu-central-1;us=us-east-1")
    reload_settings()
    client = create_app(target="ingest", source=MAIN).test_client()
    yield client, bearer(api_keys.create_key(SYSTEM, name="gw", scopes=["events:write"]).secret)
    for name in ("ABAXUS_REGION", "ABAXUS_ENFORCE_RESIDENCY", "ABAXUS_RESIDENCY_ZONES"):
        monkeypatch.delenv(name)
    reload_settings()


def _event(key, customer):
    return {
        "customer_id": customer,
        "metric_key": "api_calls",
        "value": 1,
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "idempotency_key": key,
    }


def _stored(db):
    with psycopg.connect(db) as connection:
        return sorted(k for (k,) in connection.execute("SELECT idempotency_key FROM events"))


def test_an_event_of_a_customer_homed_in_another_zone_is_refused_with_its_home(eu_region, db):
    client, headers = eu_region
    refused = client.post("/v1/events", json=_event("us-1", "cust_us"), headers=headers)
    assert refused.status_code == 421
    body = refused.get_json()
    assert body["code"] == "wrong_region" and "us-east-1" in body["detail"]
    keyed = client.post(
        "/v1/events",
        json=_event("us-2", "cust_us"),
        headers={**headers, "Idempotency-Key": "req-us-2"},
    )
    assert (keyed.status_code, keyed.get_json()["code"]) == (421, "wrong_region")
    batch = client.post(
        "/v1/events/batch",
        json={
            "events": [
                _event("eu-1", "cust_eu"),  # eu-central-1: the same zone as eu-west-1
                _event("us-3", "cust_us"),
                _event("any-1", "cust_any"),  # no home: taken anywhere
                _event("new-1", "cust_unknown"),  # not in the catalog: no home either
            ]
        },
        headers=headers,
    ).get_json()
    assert [(r["outcome"], r.get("code")) for r in batch["results"]] == [
        ("accepted", None),
        ("invalid", "wrong_region"),
        ("accepted", None),
        ("accepted", None),
    ]
    assert _stored(db) == ["any-1", "eu-1", "new-1"]


def test_without_enforcement_every_event_is_taken_and_a_bad_zone_map_refuses_to_start(
    eu_region, db, monkeypatch
):
    client, headers = eu_region
    monkeypatch.setenv("ABAXUS_ENFORCE_RESIDENCY", "false")
    reload_settings()
    assert (
        client.post("/v1/events", json=_event("us-1", "cust_us"), headers=headers).status_code
        == 202
    )
    monkeypatch.setenv("ABAXUS_RESIDENCY_ZONES", "eu=eu-west-1;us=eu-west-1")
    with pytest.raises(ValidationError, match="two zones"):
        reload_settings()
    monkeypatch.setenv("ABAXUS_RESIDENCY_ZONES", "eu-west-1")
    with pytest.raises(ValidationError, match="zone=region"):
        reload_settings()


def test_a_region_refuses_catalog_writes_naming_the_central_and_serves_reads(db, monkeypatch):
    from functions_framework import create_app as create_wsgi_app

    secret = api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret
    create_metric("api_calls")
    monkeypatch.setenv("ABAXUS_ROLE", "region")
    monkeypatch.setenv("ABAXUS_REGION", "eu-west-1")
    monkeypatch.setenv("ABAXUS_CENTRAL_URL", "https://billing-central.example")
    reload_settings()
    try:
        api = create_wsgi_app(target="api", source=MAIN).test_client()
        headers = bearer(secret)
        for method, path, body in (
            ("POST", "/v1/customers", {"id": "c", "name": "C", "currency": "EUR"}),
            ("POST", "/v1/api-keys", {"name": "k", "scopes": ["read"]}),
            ("DELETE", "/v1/metrics/api_calls", None),
        ):
            refused = api.open(path, method=method, json=body, headers=headers)
            assert refused.status_code == 421, (path, refused.get_json())
            problem = refused.get_json()
            assert problem["code"] == "wrong_region"
            assert "https://billing-central.example" in problem["detail"]
        assert api.get("/v1/metrics/api_calls", headers=headers).status_code == 200
        assert api.post("/v1/customers", json={}).status_code == 401  # 401 comes first
        # pricing, invoicing and charging are the central's too
        for target, path, body in (
            ("calculate", "/v1/pricing/calculate", {"subscription_id": "sub_x"}),
            (
                "invoice",
                "/v1/invoices",
                {
                    "subscription_id": "sub_x",
                    "period_start": "2026-11-01T00:00:00Z",
                    "period_end": "2026-12-01T00:00:00Z",
                },
            ),
            ("invoice", "/v1/invoices/inv_x/charge", {}),
        ):
            client = create_wsgi_app(target=target, source=MAIN).test_client()
            refused = client.post(path, json=body, headers=headers)
            assert refused.status_code == 421, (path, refused.get_json())
            assert refused.get_json()["detail"] == (
                f"this is region eu-west-1: writes of {target} go to "
                "https://billing-central.example"
            )
    finally:
        for name in ("ABAXUS_ROLE", "ABAXUS_REGION", "ABAXUS_CENTRAL_URL"):
            monkeypatch.delenv(name)
        reload_settings()
    all_in_one = create_wsgi_app(target="api", source=MAIN).test_client()
    created = all_in_one.post(
        "/v1/customers", json={"id": "c", "name": "C", "currency": "EUR"}, headers=bearer(secret)
    )
    assert created.status_code == 201
