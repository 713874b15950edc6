"""docs/openapi.json is generated from the routes: it must equal what the code declares, and
what the code declares must be complete — a schema for every success answer, every query
parameter a handler reads, every error an operation can answer, links that lead somewhere."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from core import auth
from functions import openapi
from functions.http import Route
from functions.routes import FUNCTIONS
from tests.conftest import PROJECT_ROOT

COMMITTED = PROJECT_ROOT / "docs" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(COMMITTED.read_text())
METHODS = {"get", "post", "put", "patch", "delete"}
# Request methods that read one named query parameter (`request.limit()` reads `limit`).
QUERY_READERS = {"query", "required", "instant", "required_instant", "one_of"}


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def api_routes() -> Iterator[tuple[str, Route]]:
    for function in FUNCTIONS:
        for endpoint, route in importlib.import_module(f"functions.{function}").APP.routes.items():
            if not route.page:
                yield endpoint, route


def resolve(reference: str) -> Any:
    assert reference.startswith("#/"), reference
    node: Any = DOCUMENT
    for part in reference[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{reference} does not resolve"
        node = node[part]
    return node


def response_of(operation: dict[str, Any], status: str) -> dict[str, Any]:
    response = operation["responses"][status]
    return resolve(response["$ref"]) if "$ref" in response else response


def test_the_committed_openapi_document_matches_the_routes():
    assert COMMITTED.read_text() == openapi.render(), (
        "run `.venv/bin/abaxus openapi` and commit docs/openapi.json"
    )


def test_every_operation_has_a_schema_for_its_success_answer():
    for path, method, operation in operations():
        successes = [s for s in operation["responses"] if s.startswith("2")]
        assert successes, f"{method.upper()} {path} has no success response"
        for status in successes:
            content = response_of(operation, status).get("content", {})
            assert content, f"{method.upper()} {path} {status} has no content"
            for media_type, body in content.items():
                assert body.get("schema"), f"{method.upper()} {path} {status} {media_type}"


def test_json_answers_are_typed_objects_not_free_form():
    for path, method, operation in operations():
        for status in operation["responses"]:
            schema = response_of(operation, status).get("content", {}).get("application/json")
            if status.startswith("2") and schema is not None:
                target = schema["schema"]
                target = resolve(target["$ref"]) if "$ref" in target else target
                assert "properties" in target or "anyOf" in target, f"{method} {path}"


def _reads(route: Route) -> set[str]:
    """The query parameters a handler reads, from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(route.handler)))
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "request"):
            continue
        if node.func.attr == "limit":
            names.add("limit")
        elif node.func.attr in QUERY_READERS:
            first = node.args[0]
            assert isinstance(first, ast.Constant), f"{route.rule}: a query name is a literal"
            names.add(first.value)
    return names


def test_every_route_declares_exactly_the_query_parameters_its_handler_reads():
    for endpoint, route in api_routes():
        declared = {parameter.name for parameter in route.query}
        assert _reads(route) == declared, endpoint


def test_every_get_documents_its_query_parameters_with_types():
    routes = dict(api_routes())
    for path, method, operation in operations():
        route = next(
            r
            for e, r in routes.items()
            if e.startswith(method.upper() + " ") and openapi.PARAMETER.sub(r"{\3}", r.rule) == path
        )
        documented = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        assert set(documented) == {p.name for p in route.query}, path
        for parameter in documented.values():
            assert parameter["schema"].get("type") in {"string", "integer"}, (path, parameter)
    summary = DOCUMENT["paths"]["/v1/usage/summary"]["get"]["parameters"]
    by_name = {p["name"]: p for p in summary}
    assert by_name["from"]["required"] and by_name["from"]["schema"]["format"] == "date-time"
    assert by_name["mode"]["schema"]["enum"] == ["realtime", "exact"]
    limit = {p["name"]: p for p in DOCUMENT["paths"]["/v1/customers"]["get"]["parameters"]}
    assert limit["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 100,
    }
    invoices = {p["name"]: p for p in DOCUMENT["paths"]["/v1/invoices"]["get"]["parameters"]}
    assert invoices["status"]["schema"]["enum"] == [
        "draft",
        "issued",
        "paid",
        "payment_failed",
        "void",
    ]


def test_every_operation_lists_the_errors_it_can_answer():
    for path, method, operation in operations():
        statuses = set(operation["responses"])
        label = f"{method.upper()} {path}"
        assert "503" in statuses, label
        if operation["security"]:
            assert {"401", "403"} <= statuses, label
            assert operation["x-abaxus-scope"] in set(auth.SCOPES), label
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= statuses, label
        if "{" in path:
            assert "404" in statuses, label
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "422" in statuses, label
        for status in statuses - {s for s in statuses if s.startswith("2")}:
            content = response_of(operation, status)["content"]
            assert list(content) == ["application/problem+json"], (label, status)


def test_every_reference_resolves():
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    references = set(walk(DOCUMENT))
    assert references, "the document references its components"
    for reference in references:
        resolve(reference)


def test_every_link_names_an_operation_and_its_parameters():
    by_id = {op["operationId"]: op for _, _, op in operations()}
    links = 0
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                links += 1
                target = by_id.get(link["operationId"])
                assert target is not None, (path, method, status, name)
                names = {p["name"] for p in target.get("parameters", [])}
                assert set(link.get("parameters", {})) <= names, (path, name)
                if "requestBody" in link:
                    assert "requestBody" in target, (path, name)
    assert links >= 20
    customer = DOCUMENT["paths"]["/v1/customers"]["post"]["responses"]["201"]["links"]
    assert customer["get_customer"] == {
        "operationId": "api.get_customer",
        "parameters": {"customer_id": "$response.body#/id"},
    }


@pytest.mark.parametrize(
    ("schema", "fields"),
    [
        ("Customer", {"id", "currency", "metadata", "archived_at"}),
        ("Invoice", {"id", "status", "lines", "total", "amount_due", "checksum"}),
        ("Calculation", {"id", "lines", "subtotal", "total", "checksum"}),
    ],
)
def test_response_schemas_forbid_undeclared_fields(schema, fields):
    found = DOCUMENT["components"]["schemas"][schema]
    assert found["additionalProperties"] is False
    assert fields <= set(found["required"])


def test_money_is_a_string_and_instants_are_date_times():
    invoice = DOCUMENT["components"]["schemas"]["Invoice"]["properties"]
    assert invoice["total"]["type"] == "string" and "pattern" in invoice["total"]
    assert invoice["created_at"] == {"format": "date-time", "title": "Created At", "type": "string"}


def test_polymorphic_parts_are_discriminated_unions():
    schemas = DOCUMENT["components"]["schemas"]
    line_items = schemas["Invoice"]["properties"]["lines"]["items"]
    assert line_items["discriminator"]["propertyName"] == "type"
    assert set(line_items["discriminator"]["mapping"]) == {
        "usage",
        "adjustment",
        "commitment",
        "discount",
    }
    charge = schemas["Plan"]["properties"]["charges"]["items"]
    assert charge["discriminator"]["propertyName"] == "model"
    assert len(charge["discriminator"]["mapping"]) == 7


def test_the_document_states_scopes_bodies_and_statuses():
    batch = DOCUMENT["paths"]["/v1/events/batch"]["post"]
    assert batch["x-abaxus-scope"] == "events:write" and "207" in batch["responses"]
    request = batch["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["events"]["maxItems"] == 500
    answered = batch["responses"]["207"]["content"]["application/json"]["schema"]
    assert answered["required"] == ["results", "accepted", "duplicates", "quarantined", "rejected"]
    plan = DOCUMENT["paths"]["/v1/price-plans"]["post"]
    assert plan["x-abaxus-scope"] == "admin" and "201" in plan["responses"]
    assert "409" in plan["responses"]
    body = resolve(plan["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert "charges" in body["properties"]
    webhook = DOCUMENT["paths"]["/v1/webhooks/stripe"]["post"]
    assert webhook["security"] == [] and "401" in webhook["responses"]
    assert {p["name"] for p in webhook["parameters"]} == {"Stripe-Signature"}
    payments = DOCUMENT["paths"]["/v1/payments"]["get"]
    assert "200" in payments["responses"] and payments["x-abaxus-scope"] == "read"
    assert DOCUMENT["paths"]["/v1/pricing/calculate"]["post"]["x-abaxus-scope"] == "read"
    assert "200" in DOCUMENT["paths"]["/v1/usage/parity"]["get"]["responses"]
    change = DOCUMENT["paths"]["/v1/subscriptions/{subscription_id}/change"]["post"]
    assert {"200", "409", "422"} <= set(change["responses"])
    changed = resolve(change["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert {"plan_code", "effective", "overrides", "minimum_commitment"} <= set(
        changed["properties"]
    )
    redeem = DOCUMENT["paths"]["/v1/subscriptions/{subscription_id}/discounts"]["post"]
    assert {"201", "409"} <= set(redeem["responses"])
    coupon = DOCUMENT["paths"]["/v1/coupons"]["post"]
    assert coupon["x-abaxus-scope"] == "admin" and "201" in coupon["responses"]
    drafted = DOCUMENT["paths"]["/v1/invoices"]["post"]["responses"]
    assert {"200", "201"} <= set(drafted)
    operation_ids = [op["operationId"] for _, _, op in operations()]
    assert len(operation_ids) == len(set(operation_ids))


def test_rendered_documents_state_their_media_type():
    pdf = DOCUMENT["paths"]["/v1/invoices/{invoice_id}.pdf"]["get"]
    assert pdf["x-abaxus-scope"] == "read"
    assert pdf["responses"]["200"]["content"] == {
        "application/pdf": {"schema": {"type": "string", "format": "binary"}}
    }
    assert "409" in pdf["responses"]  # a draft has no PDF
    html = DOCUMENT["paths"]["/v1/invoices/{invoice_id}.html"]["get"]
    assert list(html["responses"]["200"]["content"]) == ["text/html"]
