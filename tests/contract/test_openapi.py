"""docs/openapi.json is generated from the routes: it must equal what the code declares."""

import json

from functions import openapi
from tests.conftest import PROJECT_ROOT

COMMITTED = PROJECT_ROOT / "docs" / "openapi.json"


def test_the_committed_openapi_document_matches_the_routes():
    assert COMMITTED.read_text() == openapi.render(), (
        "run `.venv/bin/abaxus openapi` and commit docs/openapi.json"
    )


def test_the_document_states_scopes_bodies_and_statuses():
    document = json.loads(COMMITTED.read_text())
    batch = document["paths"]["/v1/events/batch"]["post"]
    assert batch["x-abaxus-scope"] == "events:write" and "207" in batch["responses"]
    assert (
        batch["requestBody"]["content"]["application/json"]["schema"]["properties"]["events"][
            "maxItems"
        ]
        == 500
    )
    plan = document["paths"]["/v1/price-plans"]["post"]
    assert plan["x-abaxus-scope"] == "admin" and "201" in plan["responses"]
    assert "charges" in plan["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert document["paths"]["/v1/webhooks/stripe"]["post"]["security"] == []
    payments = document["paths"]["/v1/payments"]["get"]
    assert "200" in payments["responses"] and payments["x-abaxus-scope"] == "read"
    assert "501" in document["paths"]["/v1/stats"]["get"]["responses"]
    assert document["paths"]["/v1/pricing/calculate"]["post"]["x-abaxus-scope"] == "read"
    assert "200" in document["paths"]["/v1/usage/parity"]["get"]["responses"]
    operation_ids = [
        op["operationId"] for path in document["paths"].values() for op in path.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_rendered_documents_state_their_media_type():
    document = json.loads(COMMITTED.read_text())
    pdf = document["paths"]["/v1/invoices/{invoice_id}.pdf"]["get"]
    assert pdf["x-abaxus-scope"] == "read"
    assert pdf["responses"]["200"]["content"] == {
        "application/pdf": {"schema": {"type": "string", "format": "binary"}}
    }
    html = document["paths"]["/v1/invoices/{invoice_id}.html"]["get"]
    assert list(html["responses"]["200"]["content"]) == ["text/html"]
