"""Metrics and price plans through the api function, against real PostgreSQL."""

import psycopg
import pytest

from tests.fixtures.samples import API_EXAMPLE_CHARGES
from tests.integration.catalog_client import METRIC, PLAN, Api

ALL_MODELS = API_EXAMPLE_CHARGES


@pytest.fixture
def api(admin_secret):
    return Api(admin_secret)


def _metric(key, **fields):
    return {**METRIC, "key": key, "name": key, **fields}


# -- metrics ------------------------------------------------------------------------------


def test_a_metric_is_created_as_version_one_open_ended(api):
    metric = api.post(
        "/v1/metrics", _metric("api_calls", filters={"region": ["eu-west-1", "us-east-1"]})
    )
    assert (metric["key"], metric["version"], metric["aggregation"]) == ("api_calls", 1, "sum")
    assert metric["filters"] == {"region": ["eu-west-1", "us-east-1"]}
    assert metric["effective_from"] == "2026-01-01T00:00:00Z" and metric["effective_to"] is None
    assert [v["version"] for v in metric["versions"]] == [1]
    assert api.get("/v1/metrics/api_calls") == metric


def test_metric_errors_have_their_codes(api):
    api.post("/v1/metrics", METRIC)
    api.post("/v1/metrics", METRIC, expect=409, code="metric_exists")
    body = api.post(
        "/v1/metrics",
        _metric("uniq", aggregation="unique_count"),
        expect=422,
        code="validation_error",
    )
    assert body["errors"][0]["loc"] == ["body"] and "unique_property" in body["errors"][0]["msg"]
    body = api.post(
        "/v1/metrics", {**METRIC, "key": "Bad Key"}, expect=422, code="validation_error"
    )
    assert body["errors"][0]["loc"] == ["body", "key"]
    api.get("/v1/metrics/nope", expect=404, code="not_found")


def test_a_new_version_closes_the_previous_one_at_its_start(api):
    api.post("/v1/metrics", METRIC)
    body = {k: v for k, v in METRIC.items() if k != "key"}
    metric = api.post(
        "/v1/metrics/api_calls/versions",
        {
            **body,
            "name": "API calls v2",
            "filters": {"region": ["eu"]},
            "effective_from": "2026-06-01T00:00:00Z",
        },
    )
    v1, v2 = metric["versions"]
    assert (v1["version"], v1["effective_to"]) == (1, "2026-06-01T00:00:00Z")
    assert (v2["version"], v2["effective_from"], v2["effective_to"]) == (
        2,
        "2026-06-01T00:00:00Z",
        None,
    )
    assert v1["filters"] == {} and v2["filters"] == {"region": ["eu"]}
    api.post(
        "/v1/metrics/api_calls/versions",
        {**body, "effective_from": "2026-06-01T00:00:00Z"},
        expect=409,
        code="version_out_of_order",
    )
    api.post(
        "/v1/metrics/api_calls/versions",
        {**body, "effective_from": "2026-03-01T00:00:00Z"},
        expect=409,
        code="version_out_of_order",
    )
    api.post("/v1/metrics/nope/versions", {**body}, expect=404, code="not_found")


def test_a_version_may_not_start_inside_an_invoiced_period(api, db):
    subscription = api.seed()
    with psycopg.connect(db) as connection:  # what the invoicing issue will insert on issue
        connection.execute(
            "INSERT INTO closed_periods (subscription_id, period_start, period_end, invoice_id) "
            "VALUES (%s, %s, %s, %s)",
            (subscription["id"], "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", "inv_fixture"),
        )
    body = {k: v for k, v in METRIC.items() if k != "key"}
    problem = api.post(
        "/v1/metrics/api_calls/versions",
        {**body, "effective_from": "2026-03-15T00:00:00Z"},
        expect=409,
        code="would_change_closed_invoice",
    )
    assert "2026-04-01" in problem["detail"]
    assert (
        api.post(
            "/v1/metrics/api_calls/versions", {**body, "effective_from": "2026-04-01T00:00:00Z"}
        )["version"]
        == 2
    )


def test_an_archived_metric_stays_readable_but_takes_no_new_versions_or_plans(api):
    api.post("/v1/metrics", METRIC)
    archived = api.delete("/v1/metrics/api_calls")
    assert archived["archived_at"] is not None
    assert api.get("/v1/metrics/api_calls")["archived_at"] == archived["archived_at"]
    assert (
        api.delete("/v1/metrics/api_calls")["archived_at"] == archived["archived_at"]
    )  # idempotent
    body = {k: v for k, v in METRIC.items() if k != "key"}
    api.post(
        "/v1/metrics/api_calls/versions",
        {**body, "effective_from": "2027-01-01T00:00:00Z"},
        expect=409,
        code="metric_archived",
    )
    problem = api.post("/v1/price-plans", PLAN, expect=422, code="unknown_metric")
    assert problem["errors"][0]["loc"] == ["body", "charges", 0, "metric_key"]


def test_metrics_list_in_key_order_with_cursors(api):
    for key in ("c_metric", "a_metric", "b_metric"):
        api.post("/v1/metrics", _metric(key))
    first = api.get("/v1/metrics?limit=2")
    second = api.get(f"/v1/metrics?limit=2&cursor={first['next_cursor']}")
    assert [m["key"] for m in first["data"] + second["data"]] == [
        "a_metric",
        "b_metric",
        "c_metric",
    ]
    assert second["next_cursor"] is None
    api.get("/v1/metrics?cursor=garbage", expect=422, code="invalid_cursor")


# -- price plans --------------------------------------------------------------------------


def _all_metrics(api):
    for key in ("api_calls", "storage_gb", "seats", "emails", "tokens"):
        api.post("/v1/metrics", _metric(key))
    api.post("/v1/metrics", _metric("compute_seconds", group_by=["region", "tier"]))


def test_a_plan_in_all_seven_models_is_stored_exactly(api):
    _all_metrics(api)
    plan = api.post("/v1/price-plans", {**PLAN, "charges": ALL_MODELS})
    assert (plan["code"], plan["version"], plan["versions"], plan["currency_minor_units"]) == (
        "pro",
        1,
        [1],
        2,
    )
    assert [c["model"] for c in plan["charges"]] == [
        "per_unit",
        "tiered",
        "volume",
        "package",
        "flat_fee",
        "matrix",
        "custom_formula",
    ]
    assert plan["charges"][0]["unit_price"] == "0.001"
    assert plan["charges"][1]["tiers"][1] == {"up_to": None, "unit_price": "0.05", "flat_fee": "0"}
    assert plan["charges"][5]["prices"][0]["match"] == {"region": "us", "tier": "gpu"}
    assert len(plan["definition_sha256"]) == 64
    assert api.get("/v1/price-plans/pro") == plan


def test_plan_errors_have_their_codes(api):
    _all_metrics(api)
    problem = api.post(
        "/v1/price-plans",
        {
            **PLAN,
            "charges": [
                {"metric_key": "tokens", "model": "custom_formula", "formula": "quantity ** 2"}
            ],
        },
        expect=422,
        code="invalid_formula",
    )
    assert problem["errors"][0]["loc"] == ["body", "charges", 0, "custom_formula"]
    assert "position 1" in problem["errors"][0]["msg"]
    api.post(
        "/v1/price-plans",
        {**PLAN, "charges": [{"metric_key": "api_calls", "model": "graduated", "unit_price": "1"}]},
        expect=422,
        code="unknown_charge_model",
    )
    api.post(
        "/v1/price-plans",
        {**PLAN, "charges": [{"metric_key": "nope", "model": "per_unit", "unit_price": "1"}]},
        expect=422,
        code="unknown_metric",
    )
    matrix_without_groups = {
        "metric_key": "api_calls",
        "model": "matrix",
        "prices": [{"match": {"region": "us"}, "unit_price": "1"}],
    }
    api.post(
        "/v1/price-plans",
        {**PLAN, "charges": [matrix_without_groups]},
        expect=422,
        code="invalid_matrix",
    )
    wrong_group = {
        "metric_key": "compute_seconds",
        "model": "matrix",
        "prices": [{"match": {"zone": "a"}, "unit_price": "1"}],
    }
    problem = api.post(
        "/v1/price-plans", {**PLAN, "charges": [wrong_group]}, expect=422, code="invalid_matrix"
    )
    assert problem["errors"][0]["loc"] == ["body", "charges", 0, "prices", 0, "match"]
    api.post("/v1/price-plans", {**PLAN, "currency": "ZZZ"}, expect=422, code="validation_error")
    api.post(
        "/v1/price-plans", {**PLAN, "interval": "fortnight"}, expect=422, code="validation_error"
    )
    api.post("/v1/price-plans", PLAN)
    api.post("/v1/price-plans", PLAN, expect=409, code="plan_exists")
    api.get("/v1/price-plans/pro?version=9", expect=404, code="unknown_plan_version")
    api.get("/v1/price-plans/pro?version=x", expect=422, code="validation_error")
    api.get("/v1/price-plans/none", expect=404, code="not_found")


def test_plan_versions_are_immutable_and_subscriptions_keep_theirs(api):
    subscription = api.seed()
    body = {k: v for k, v in PLAN.items() if k != "code"}
    v2 = api.post(
        "/v1/price-plans/pro/versions",
        {
            **body,
            "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.002"}],
        },
    )
    assert (v2["version"], v2["versions"]) == (2, [1, 2])
    v1 = api.get("/v1/price-plans/pro?version=1")
    assert v1["charges"][0]["unit_price"] == "0.001" and len(v1["charges"]) == 2
    assert api.get("/v1/price-plans/pro")["version"] == 2
    assert api.get(f"/v1/subscriptions/{subscription['id']}")["plan_version"] == 1
    newer = api.post(
        "/v1/subscriptions", {"customer_id": api.customer("cust_newer"), "plan_code": "pro"}
    )
    assert newer["plan_version"] == 2


def test_an_archived_plan_keeps_billing_its_subscriptions_but_takes_no_new_ones(api):
    subscription = api.seed()
    assert api.delete("/v1/price-plans/pro")["archived_at"] is not None
    assert api.get("/v1/price-plans/pro")["charges"][0]["unit_price"] == "0.001"
    assert api.get(f"/v1/subscriptions/{subscription['id']}")["status"] == "active"
    api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "pro"},
        expect=422,
        code="unknown_plan",
    )
    body = {k: v for k, v in PLAN.items() if k != "code"}
    api.post("/v1/price-plans/pro/versions", body, expect=409, code="plan_archived")
