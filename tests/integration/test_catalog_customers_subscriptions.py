"""Customers, subscriptions, the audit trail and what the database refuses on its own."""

from datetime import UTC, datetime

import psycopg
import pytest
from dateutil.relativedelta import relativedelta

from core.services import audit
from tests.integration.catalog_client import CUSTOMER, METRIC, PLAN, Api


@pytest.fixture
def api(admin_secret):
    return Api(admin_secret)


def _iso(instant):
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- customers ----------------------------------------------------------------------------


def test_a_customer_keeps_its_client_chosen_id(api):
    customer = api.post("/v1/customers", CUSTOMER)
    assert {k: customer[k] for k in CUSTOMER} == CUSTOMER
    assert customer["archived_at"] is None
    assert api.get("/v1/customers/cust_acme") == customer


def test_customer_errors_have_their_codes(api):
    api.post("/v1/customers", CUSTOMER)
    api.post("/v1/customers", CUSTOMER, expect=409, code="customer_exists")
    for bad in (
        {**CUSTOMER, "id": "has spaces"},
        {**CUSTOMER, "id": "c2", "email": "not-an-email"},
        {**CUSTOMER, "id": "c2", "currency": "ZZZ"},
        {**CUSTOMER, "id": "c2", "provider_customer_id": None},  # stripe needs it
        {**CUSTOMER, "id": "c2", "metadata": {f"k{n}": "v" for n in range(51)}},
        {**CUSTOMER, "id": "c2", "billing_provider": "paypal"},
    ):
        api.post("/v1/customers", bad, expect=422, code="validation_error")
    api.get("/v1/customers/nobody", expect=404, code="not_found")


def test_patch_changes_only_given_fields_and_is_audited_before_and_after(api):
    api.post("/v1/customers", CUSTOMER)
    changed = api.patch(
        "/v1/customers/cust_acme", {"email": "ap@acme.test", "metadata": {"tier": "platinum"}}
    )
    assert (changed["email"], changed["metadata"], changed["name"]) == (
        "ap@acme.test",
        {"tier": "platinum"},
        "Acme Inc",
    )
    entries = api.get("/v1/audit?entity=customer&entity_id=cust_acme")["data"]
    assert [e["action"] for e in entries] == ["customer.created", "customer.updated"]
    assert entries[1]["changes"] == {
        "email": {"before": "billing@acme.test", "after": "ap@acme.test"},
        "metadata": {"before": {"tier": "gold"}, "after": {"tier": "platinum"}},
    }
    assert (
        api.patch("/v1/customers/cust_acme", {"email": "ap@acme.test"})["email"] == "ap@acme.test"
    )
    assert (
        len(api.get("/v1/audit?entity=customer&entity_id=cust_acme")["data"]) == 2
    )  # no-op: no row
    api.patch("/v1/customers/cust_acme", {"currency": "EUR"}, expect=422, code="validation_error")
    api.patch(
        "/v1/customers/cust_acme",
        {"billing_provider": "stripe", "provider_customer_id": None},
        expect=422,
        code="validation_error",
    )
    api.patch("/v1/customers/nobody", {"name": "x"}, expect=404, code="not_found")


def test_an_archived_customer_is_readable_and_frozen(api):
    api.post("/v1/customers", CUSTOMER)
    archived = api.delete("/v1/customers/cust_acme")
    assert archived["archived_at"] is not None
    assert api.get("/v1/customers/cust_acme")["archived_at"] == archived["archived_at"]
    api.patch("/v1/customers/cust_acme", {"name": "New"}, expect=409, code="customer_archived")


# -- subscriptions ------------------------------------------------------------------------


def test_a_subscription_locks_the_latest_version_and_knows_its_period(api):
    subscription = api.seed()
    assert subscription["id"].startswith("sub_") and subscription["plan_version"] == 1
    assert subscription["status"] == "active" and subscription["interval"] == "month"
    now = datetime.now(UTC)
    months = (now.year - 2026) * 12 + now.month - 3
    start = datetime(2026, 3, 1, tzinfo=UTC) + relativedelta(months=months)
    assert subscription["current_period"] == {
        "start": _iso(start),
        "end": _iso(start + relativedelta(months=1)),
    }
    listed = api.get("/v1/subscriptions?customer_id=cust_acme")["data"]
    assert [s["id"] for s in listed] == [subscription["id"]]
    assert api.get("/v1/subscriptions?customer_id=someone_else")["data"] == []


def test_a_future_start_is_scheduled_with_its_first_period(api):
    api.seed()
    later = api.post(
        "/v1/subscriptions",
        {
            "customer_id": api.customer("cust_later"),
            "plan_code": "pro",
            "starts_at": "2030-01-31T00:00:00Z",
        },
    )
    assert later["status"] == "scheduled"
    assert later["current_period"] == {
        "start": "2030-01-31T00:00:00Z",
        "end": "2030-02-28T00:00:00Z",
    }


def test_overrides_replace_a_charge_for_one_subscription_only(api):
    api.seed()
    deal = api.post(
        "/v1/subscriptions",
        {
            "customer_id": api.customer("cust_deal"),
            "plan_code": "pro",
            "overrides": [
                {"metric_key": "api_calls", "unit_price": "0.0008"},
                {"charge": "Platform fee", "amount": "0"},
            ],
        },
    )
    assert deal["overrides"] == [
        {"metric_key": "api_calls", "unit_price": "0.0008"},
        {"charge": "Platform fee", "amount": "0"},
    ]
    assert api.get("/v1/price-plans/pro")["charges"][0]["unit_price"] == "0.001"
    problem = api.post(
        "/v1/subscriptions",
        {
            "customer_id": "cust_acme",
            "plan_code": "pro",
            "overrides": [{"metric_key": "api_calls", "unit_price": "-1"}],
        },
        expect=422,
        code="invalid_override",
    )
    assert problem["errors"][0]["loc"] == ["body", "overrides", 0]
    api.post(
        "/v1/subscriptions",
        {
            "customer_id": "cust_acme",
            "plan_code": "pro",
            "overrides": [{"metric_key": "storage", "unit_price": "1"}],
        },
        expect=422,
        code="invalid_override",
    )
    api.post(
        "/v1/subscriptions",
        {
            "customer_id": "cust_acme",
            "plan_code": "pro",
            "overrides": [{"metric_key": "api_calls", "model": "tiered"}],
        },
        expect=422,
        code="invalid_override",
    )


def test_subscription_errors_have_their_codes(api):
    api.seed()
    api.post(
        "/v1/subscriptions",
        {"customer_id": "nobody", "plan_code": "pro"},
        expect=422,
        code="unknown_customer",
    )
    api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "nope"},
        expect=422,
        code="unknown_plan",
    )
    api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "pro", "plan_version": 7},
        expect=422,
        code="unknown_plan_version",
    )
    api.post("/v1/customers", {**CUSTOMER, "id": "cust_eu", "currency": "EUR"})
    api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_eu", "plan_code": "pro"},
        expect=422,
        code="currency_mismatch",
    )
    api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "pro", "starts_at": "2026-03-01T00:00:00"},
        expect=422,
        code="validation_error",
    )
    api.get("/v1/subscriptions/sub_nope", expect=404, code="not_found")


def test_cancel_at_period_end_or_at_an_instant_once(api):
    subscription = api.seed()
    canceled = api.post(f"/v1/subscriptions/{subscription['id']}/cancel", None, expect=200)
    assert canceled["ends_at"] == subscription["current_period"]["end"]
    assert canceled["canceled_at"] is not None and canceled["status"] == "active"
    api.post(
        f"/v1/subscriptions/{subscription['id']}/cancel", {}, expect=409, code="already_canceled"
    )
    other = api.post(
        "/v1/subscriptions", {"customer_id": api.customer("cust_other"), "plan_code": "pro"}
    )
    at = api.post(
        f"/v1/subscriptions/{other['id']}/cancel", {"at": "2099-01-01T00:00:00Z"}, expect=200
    )
    assert at["ends_at"] == "2099-01-01T00:00:00Z"
    third = api.post(
        "/v1/subscriptions", {"customer_id": api.customer("cust_third"), "plan_code": "pro"}
    )
    api.post(
        f"/v1/subscriptions/{third['id']}/cancel",
        {"at": "2020-01-01T00:00:00Z"},
        expect=422,
        code="invalid_cancellation",
    )


# -- what the database itself refuses -----------------------------------------------------


def _refused(connection, statement):
    with pytest.raises(psycopg.Error) as caught:
        connection.execute(statement)
    assert caught.value.sqlstate == "AB001", caught.value


def test_the_database_refuses_deletes_and_rewrites_of_catalog_history(api, db):
    subscription = api.seed()
    with psycopg.connect(db, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO closed_periods (subscription_id, period_start, period_end, invoice_id) "
            "VALUES (%s, '2026-03-01Z', '2026-04-01Z', 'inv_1')",
            (subscription["id"],),
        )
        for table in (
            "metrics",
            "metric_versions",
            "price_plans",
            "plan_versions",
            "customers",
            "subscriptions",
            "closed_periods",
        ):
            _refused(connection, f"DELETE FROM {table}")
            _refused(connection, f"TRUNCATE {table} CASCADE")
        _refused(connection, "UPDATE metric_versions SET name = 'rewritten'")
        _refused(connection, "UPDATE plan_versions SET charges = '[]'")
        _refused(connection, "UPDATE closed_periods SET period_end = now()")
        assert connection.execute(
            "SELECT charges->0->>'unit_price' FROM plan_versions"
        ).fetchone() == ("0.001",)


# -- audit and idempotency ----------------------------------------------------------------


def test_every_mutation_writes_one_chained_audit_row(api):
    subscription = api.seed()
    body = {k: v for k, v in METRIC.items() if k != "key"}
    api.post("/v1/metrics/api_calls/versions", {**body, "effective_from": "2027-01-01T00:00:00Z"})
    api.post("/v1/price-plans/pro/versions", {k: v for k, v in PLAN.items() if k != "code"})
    api.patch("/v1/customers/cust_acme", {"name": "Acme"})
    api.post(f"/v1/subscriptions/{subscription['id']}/cancel", {}, expect=200)
    api.delete("/v1/price-plans/pro")
    api.delete("/v1/metrics/api_calls")
    api.delete("/v1/customers/cust_acme")
    entries = api.get("/v1/audit?limit=1000")["data"]
    assert [(e["action"], e["entity_id"]) for e in entries][1:] == [
        ("metric.created", "api_calls"),
        ("price_plan.created", "pro"),
        ("customer.created", "cust_acme"),
        ("subscription.created", subscription["id"]),
        ("metric.version_created", "api_calls"),
        ("price_plan.version_created", "pro"),
        ("customer.updated", "cust_acme"),
        ("subscription.canceled", subscription["id"]),
        ("price_plan.archived", "pro"),
        ("metric.archived", "api_calls"),
        ("customer.archived", "cust_acme"),
    ]
    assert all(e["request_id"].startswith("req_") for e in entries[1:])
    assert audit.verify().ok


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/metrics", {**METRIC, "key": "replayed"}),
        ("/v1/price-plans", {**PLAN, "code": "replayed"}),
        ("/v1/customers", {**CUSTOMER, "id": "replayed"}),
        ("/v1/subscriptions", {"customer_id": "cust_replayed", "plan_code": "pro"}),
        (
            "/v1/metrics/api_calls/versions",
            {
                **{k: v for k, v in METRIC.items() if k != "key"},
                "effective_from": "2028-01-01T00:00:00Z",
            },
        ),
        ("/v1/price-plans/pro/versions", {k: v for k, v in PLAN.items() if k != "code"}),
        ("/v1/api-keys", {"name": "replayed", "scopes": ["read"]}),
    ],
)
def test_every_catalog_post_replays_its_first_response(api, path, body):
    api.seed()
    api.customer("cust_replayed")
    before = len(api.get("/v1/audit?limit=1000")["data"])
    first = api.client.post(
        path, json=body, headers={**api.headers, "Idempotency-Key": f"idem-{path}"}
    )
    again = api.client.post(
        path, json=body, headers={**api.headers, "Idempotency-Key": f"idem-{path}"}
    )
    assert first.status_code == 201 and again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    if path == "/v1/api-keys":  # its secret is shown once: the replay answers without it
        assert again.get_json() == {k: v for k, v in first.get_json().items() if k != "secret"}
    else:
        assert again.get_data() == first.get_data()
    assert len(api.get("/v1/audit?limit=1000")["data"]) == before + 1


def test_cancel_replays_too(api):
    subscription = api.seed()
    path = f"/v1/subscriptions/{subscription['id']}/cancel"
    first = api.client.post(path, json={}, headers={**api.headers, "Idempotency-Key": "cancel-1"})
    again = api.client.post(path, json={}, headers={**api.headers, "Idempotency-Key": "cancel-1"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.get_data() == first.get_data()
