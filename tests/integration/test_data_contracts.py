"""Data contracts and ownership (API.md §18) through the real api and ingest apps, on
the real PostgreSQL: contracts refused when invalid, each rule kind, reject and
quarantine, release after a new version, producers over HTTP and CloudEvents, owners,
filter exclusions made visible, the published JSON Schema and the ODCS export."""

import importlib.resources
import json
from datetime import UTC, datetime, timedelta

import jsonschema_rs
import psycopg
import pytest
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from functions_framework import create_app as create_wsgi_app
from open_data_contract_standard.model import OpenDataContractStandard

from core.services import aggregation, api_keys, usage
from core.services.caller import SYSTEM
from tests.asgi_client import create_app
from tests.conftest import PROJECT_ROOT, bearer

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
NOW = datetime.now(UTC).replace(microsecond=0)
MONTH_START = NOW.replace(day=1, hour=0, minute=0, second=0)

GATEWAY_CONTRACT = {
    "owner": "team-gateway",
    "value": {"type": "integer", "minimum": "0", "maximum": "1000000"},
    "properties": {
        "type": "object",
        "required": ["region", "route"],
        "properties": {
            "region": {"enum": ["eu-west-1", "us-east-1"]},
            "route": {"type": "string", "pattern": "^/"},
            "retries": {"type": "integer"},
        },
    },
    "on_violation": "reject",
}


def _metric(key="api_calls", contract=None, **extra):
    body = {
        "key": key,
        "name": "API calls",
        "unit": "call",
        "aggregation": "sum",
        "effective_from": "2026-01-01T00:00:00Z",
        **extra,
    }
    if contract is not None:
        body["contract"] = contract
    return body


def _event(key, value=1, *, metric="api_calls", at=None, **properties):
    return {
        "customer_id": "cust_acme",
        "metric_key": metric,
        "value": value,
        "timestamp": (at or NOW - timedelta(minutes=5)).isoformat(),
        "idempotency_key": key,
        "properties": properties,
    }


class Clients:
    def __init__(self, admin_secret):
        self.api = create_wsgi_app(target="api", source=MAIN).test_client()
        self.ingest = create_app(target="ingest", source=MAIN).test_client()
        self.admin = bearer(admin_secret)

    def key(self, name, scopes, team=None):
        return bearer(api_keys.create_key(SYSTEM, name=name, scopes=scopes, team=team).secret)

    def metric(self, body, expect=201):
        response = self.api.post("/v1/metrics", json=body, headers=self.admin)
        assert response.status_code == expect, response.get_data(as_text=True)
        return response.get_json()


@pytest.fixture
def clients(admin_secret):
    return Clients(admin_secret)


def _stored_keys(db, table="events"):
    with psycopg.connect(db) as connection:
        return [
            key
            for (key,) in connection.execute(
                f"SELECT idempotency_key FROM {table} ORDER BY idempotency_key"
            )
        ]


def test_an_invalid_contract_is_refused_with_where_and_nothing_is_created(clients, db):
    for contract, where in (
        ({"properties": {"type": "objekt"}}, "properties"),
        ({"properties": {"$ref": "https://schemas.example/event.json"}}, "properties"),
        ({"value": {"minimum": "10", "maximum": "1"}}, "value"),
        ({"on_violation": "ignore"}, "on_violation"),
        ({"owner": "Team Gateway"}, "owner"),
    ):
        refused = clients.metric(_metric(contract=contract), expect=422)
        assert refused["code"] == "invalid_contract", (contract, refused)
        assert refused["errors"][0]["loc"][:3] == ["body", "contract", where], refused
    assert clients.api.get("/v1/metrics", headers=clients.admin).get_json()["data"] == []


def test_every_rule_kind_refuses_with_the_pointer_and_the_rule_and_stores_nothing(clients, db):
    shown = clients.metric(_metric(contract=GATEWAY_CONTRACT))
    assert (shown["owner"], shown["producers"]) == ("team-gateway", None)
    assert shown["contract"]["value"] == {"type": "integer", "minimum": "0", "maximum": "1000000"}
    producer = clients.key("gateway", ["events:write"])
    ok = {"region": "eu-west-1", "route": "/v1/chat"}
    cases = [
        ("valid", 10, ok, None),
        ("required", 1, {"route": "/x"}, (["properties", "region"], "required")),
        ("enum", 1, {**ok, "region": "mars-1"}, (["properties", "region"], "enum")),
        ("pattern", 1, {**ok, "route": "v1/chat"}, (["properties", "route"], "pattern")),
        ("type", 1, {**ok, "retries": "two"}, (["properties", "retries"], "type")),
        ("integer", "1.5", ok, (["value"], "type")),
        ("minimum", -5, ok, (["value"], "minimum")),
        ("maximum", 1000001, ok, (["value"], "maximum")),
    ]
    batch = [_event(name, value, **props) for name, value, props, _ in cases]
    response = clients.ingest.post("/v1/events/batch", json={"events": batch}, headers=producer)
    assert response.status_code == 207
    body = response.get_json()
    assert (body["accepted"], body["rejected"], body["quarantined"]) == (1, 7, 0)
    for (name, _, _, expected), result in zip(cases, body["results"], strict=True):
        if expected is None:
            assert result["outcome"] == "accepted"
            continue
        assert (result["outcome"], result["status"], result["code"]) == (
            "invalid",
            422,
            "contract_violation",
        ), name
        loc, rule = expected
        assert [(e["loc"], e["type"]) for e in result["errors"]] == [(loc, rule)], name
        assert "/" + "/".join(loc) in result["detail"]
    assert _stored_keys(db) == ["valid"]
    # The single route: 422 contract_violation with where, and the key is not consumed.
    single = clients.ingest.post(
        "/v1/events", json=_event("single", 1, route="/x"), headers=producer
    )
    assert (single.status_code, single.get_json()["code"]) == (422, "contract_violation")
    assert [(e["loc"], e["type"]) for e in single.get_json()["errors"]] == [
        (["body", "properties", "region"], "required")
    ]
    fixed = clients.ingest.post("/v1/events", json=_event("single", 1, **ok), headers=producer)
    assert (fixed.status_code, fixed.get_json()["status"]) == (202, "accepted")
    # The violation names the rule, never the offending value (it may be personal data).
    leaky = clients.ingest.post(
        "/v1/events", json=_event("leak", 1, region="patient-4711", route="/x"), headers=producer
    )
    assert leaky.status_code == 422 and "patient-4711" not in leaky.data.decode()


def test_quarantine_holds_uncounted_then_a_new_version_releases(clients, db):
    contract = {
        "owner": "team-gateway",
        "properties": {"type": "object", "properties": {"region": {"enum": ["eu-west-1"]}}},
        "on_violation": "quarantine",
    }
    clients.metric(_metric(contract=contract))
    producer = clients.key("gateway", ["events:write"])
    held = clients.ingest.post(
        "/v1/events", json=_event("us-1", 5, region="us-east-1"), headers=producer
    )
    assert held.status_code == 202, held.get_json()
    assert held.get_json()["status"] == "quarantined"
    batch = clients.ingest.post(
        "/v1/events/batch",
        json={
            "events": [
                _event("eu-1", 2, region="eu-west-1"),
                _event("us-2", 7, region="us-east-1"),
                _event("us-1", 5, region="us-east-1"),  # the resend: its key is consumed
            ]
        },
        headers=producer,
    ).get_json()
    assert [(r["outcome"], r["status"]) for r in batch["results"]] == [
        ("accepted", 202),
        ("quarantined", 202),
        ("duplicate", 200),
    ]
    assert batch["results"][2]["id"] == held.get_json()["id"]
    assert (batch["accepted"], batch["quarantined"], batch["duplicates"]) == (1, 1, 1)
    aggregation.drain()
    window = {"customer_id": "cust_acme", "metric_key": "api_calls"}
    for mode in ("realtime", "exact"):
        counted = usage.summary(mode=mode, start=MONTH_START, end=NOW, **window)
        assert (counted["value"], counted["event_count"]) == (2, 1), mode
    listed = clients.ingest.get(
        "/v1/quarantine?metric_key=api_calls", headers=clients.admin
    ).get_json()["data"]
    assert sorted(e["idempotency_key"] for e in listed) == ["us-1", "us-2"]
    assert listed[0]["violations"] == [
        {
            "pointer": "/properties/region",
            "rule": "enum",
            "message": listed[0]["violations"][0]["message"],
        }
    ]
    assert listed[0]["producer"] == "gateway" and listed[0]["metric_version"] == 1
    # A release under the same contract releases nothing and says why.
    again = clients.ingest.post(
        "/v1/quarantine/release", json={"metric_key": "api_calls"}, headers=clients.admin
    ).get_json()
    assert (again["released"], again["still_quarantined"], again["remaining"]) == (0, 2, 2)
    # The owner fixes the contract from before those events on, then releases one by id.
    owner = clients.key("gateway-owner", ["corrections:write"], team="team-gateway")
    fixed = {
        **contract,
        "properties": {
            "type": "object",
            "properties": {"region": {"enum": ["eu-west-1", "us-east-1"]}},
        },
    }
    body = {
        k: v
        for k, v in _metric(contract=fixed, effective_from="2026-06-01T00:00:00Z").items()
        if k != "key"
    }
    version = clients.api.post("/v1/metrics/api_calls/versions", json=body, headers=owner)
    assert version.status_code == 201, version.get_data(as_text=True)
    first_id = next(e["id"] for e in listed if e["idempotency_key"] == "us-1")
    released = clients.ingest.post(
        "/v1/quarantine/release",
        json={"metric_key": "api_calls", "ids": [first_id, "evt_nothing"]},
        headers=owner,
    ).get_json()
    assert (released["released"], released["not_held"], released["remaining"]) == (1, 1, 1)
    assert {r["id"]: r["status"] for r in released["results"]} == {
        first_id: "released",
        "evt_nothing": "not_held",
    }
    aggregation.drain()
    for mode in ("realtime", "exact"):
        counted = usage.summary(mode=mode, start=MONTH_START, end=NOW, **window)
        assert (counted["value"], counted["event_count"]) == (7, 2), mode
    assert _stored_keys(db) == ["eu-1", "us-1"]  # the released event, under its own id
    assert (
        clients.ingest.get(
            "/v1/quarantine?metric_key=api_calls&status=released", headers=clients.admin
        ).get_json()["data"][0]["id"]
        == first_id
    )
    # A resend of the released event is still its duplicate.
    resend = clients.ingest.post(
        "/v1/events", json=_event("us-1", 5, region="us-east-1"), headers=producer
    ).get_json()
    assert (resend["status"], resend["id"]) == ("duplicate", first_id)


def test_producers_are_checked_for_http_keys_and_cloudevent_sources(clients, db):
    contract = {"producers": ["gateway-eu", "/svc/gateway"], "on_violation": "quarantine"}
    clients.metric(_metric(contract=contract))
    allowed = clients.key("gateway-eu", ["events:write"])
    other = clients.key("batch-importer", ["events:write"])
    assert clients.ingest.post("/v1/events", json=_event("a"), headers=allowed).status_code == 202
    refused = clients.ingest.post("/v1/events", json=_event("b"), headers=other)
    assert (refused.status_code, refused.get_json()["code"]) == (403, "producer_not_allowed")
    keyed = clients.ingest.post(
        "/v1/events", json=_event("c"), headers={**other, "Idempotency-Key": "req-c"}
    )
    assert (keyed.status_code, keyed.get_json()["code"]) == (403, "producer_not_allowed")
    batch = clients.ingest.post(
        "/v1/events/batch", json={"events": [_event("d")]}, headers=other
    ).get_json()
    assert (batch["results"][0]["outcome"], batch["results"][0]["code"]) == (
        "invalid",
        "producer_not_allowed",
    )

    def cloudevent(source, event_id):
        data = {k: v for k, v in _event("unused").items() if k != "idempotency_key"}
        return to_binary(
            CloudEvent(
                {
                    "type": "dev.abaxus.usage.reported.v1",
                    "source": source,
                    "id": event_id,
                    "datacontenttype": "application/json",
                },
                data,
            )
        )

    headers, body = cloudevent("/svc/gateway", "ce-1")
    assert clients.ingest.post("/", headers=headers, data=body).status_code == 202
    headers, body = cloudevent("/svc/unknown", "ce-2")
    assert clients.ingest.post("/", headers=headers, data=body).status_code == 422
    assert _stored_keys(db) == ["/svc/gateway/ce-1", "a"]
    assert _stored_keys(db, "quarantined_events") == []


def test_only_the_owning_team_or_an_admin_changes_a_contract(clients, db):
    clients.metric(_metric(contract=GATEWAY_CONTRACT))
    body = {
        k: v
        for k, v in _metric(
            contract=GATEWAY_CONTRACT, effective_from="2026-03-01T00:00:00Z"
        ).items()
        if k != "key"
    }
    path = "/v1/metrics/api_calls/versions"
    other_team = clients.key("billing", ["corrections:write"], team="team-billing")
    refused = clients.api.post(path, json=body, headers=other_team)
    assert (refused.status_code, refused.get_json()["code"]) == (403, "not_owner")
    producer = clients.key("gateway", ["events:write"], team="team-gateway")
    refused = clients.api.post(path, json=body, headers=producer)
    assert (refused.status_code, refused.get_json()["code"]) == (403, "insufficient_scope")
    release = clients.ingest.post(
        "/v1/quarantine/release", json={"metric_key": "api_calls"}, headers=other_team
    )
    assert (release.status_code, release.get_json()["code"]) == (403, "not_owner")
    owner = clients.key("gateway-owner", ["corrections:write"], team="team-gateway")
    created = clients.api.post(path, json=body, headers=owner)
    assert created.status_code == 201
    assert [v["version"] for v in created.get_json()["versions"]] == [1, 2]
    trail = clients.api.get(
        "/v1/audit?entity=metric&entity_id=api_calls", headers=clients.admin
    ).get_json()["data"]
    changed = next(e for e in trail if e["action"] == "metric.version_created")
    assert changed["changes"] == {"team": "team-gateway"}
    assert changed["actor"].startswith("key_")
    # A metric without an owner: admins only.
    clients.metric(_metric(key="storage_gb"))
    unowned = clients.api.post(
        "/v1/metrics/storage_gb/versions",
        json={**body, "contract": None},
        headers=owner,
    )
    assert (unowned.status_code, unowned.get_json()["code"]) == (403, "not_owner")
    listed = clients.api.get("/v1/api-keys", headers=clients.admin).get_json()["data"]
    assert {k["name"]: k["team"] for k in listed}["gateway-owner"] == "team-gateway"


def test_a_contract_change_reaches_ingestion_at_its_commit(clients, db):
    clients.metric(_metric())
    producer = clients.key("gateway", ["events:write"])
    first = clients.ingest.post("/v1/events", json=_event("before"), headers=producer)
    assert first.get_json()["status"] == "accepted"  # this process now holds version 1
    # Another pod creates version 2 with a contract, in force from before these events:
    # this process was not told, and the store statement finds out.
    with psycopg.connect(db, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO metric_versions (metric_key, version, name, unit, aggregation, "
            "effective_from, contract) VALUES ('api_calls', 2, 'API calls', 'call', 'sum', "
            "%s, %s)",
            (
                NOW - timedelta(days=1),
                json.dumps({"value": {"type": "integer", "maximum": "10"}}),
            ),
        )
    refused = clients.ingest.post("/v1/events", json=_event("after", 11), headers=producer)
    assert (refused.status_code, refused.get_json()["code"]) == (422, "contract_violation")
    assert _stored_keys(db) == ["before"]


def test_events_the_filters_exclude_are_counted_as_excluded(clients, db):
    clients.metric(_metric(filters={"region": ["eu-west-1"]}))
    producer = clients.key("gateway", ["events:write"])
    earlier = MONTH_START + timedelta(hours=1, minutes=10)
    events = [
        _event("eu", 3, region="eu-west-1", at=earlier),
        _event("us", 4, region="us-east-1", at=earlier),
        _event("none", 5, at=earlier),
        _event("edge", 6, region="us-east-1", at=NOW - timedelta(minutes=1)),
    ]
    clients.ingest.post("/v1/events/batch", json={"events": events}, headers=producer)
    aggregation.drain()
    for mode in ("realtime", "exact"):
        counted = usage.summary(
            mode=mode, customer_id="cust_acme", metric_key="api_calls", start=MONTH_START, end=NOW
        )
        assert (counted["value"], counted["event_count"], counted["excluded_events"]) == (
            3,
            1,
            3,
        ), mode
    aggregate = create_wsgi_app(target="aggregate", source=MAIN).test_client()
    shown = aggregate.get(
        f"/v1/usage/summary?customer_id=cust_acme&metric_key=api_calls"
        f"&from={MONTH_START.isoformat().replace('+00:00', 'Z')}"
        f"&to={NOW.isoformat().replace('+00:00', 'Z')}",
        headers=clients.admin,
    ).get_json()
    assert shown["excluded_events"] == 3
    # A new version with the same filters refolds the metric: exclusions are rebuilt too.
    clients.api.post(
        "/v1/metrics/api_calls/versions",
        json={
            k: v
            for k, v in _metric(
                filters={"region": ["eu-west-1"]}, effective_from="2026-02-01T00:00:00Z"
            ).items()
            if k != "key"
        },
        headers=clients.admin,
    )
    aggregation.drain()
    refolded = usage.summary(
        mode="realtime", customer_id="cust_acme", metric_key="api_calls", start=MONTH_START, end=NOW
    )
    assert (refolded["value"], refolded["excluded_events"], refolded["meter_versions"]) == (
        3,
        3,
        [2],
    )


def test_the_contract_is_published_as_json_schema_and_odcs(clients, db):
    clients.metric(_metric(contract={**GATEWAY_CONTRACT, "producers": ["gateway-eu"]}))
    schema = clients.api.get(
        "/v1/metrics/api_calls/versions/1/schema", headers=clients.admin
    ).get_json()
    validator = jsonschema_rs.Draft202012Validator(schema)
    good = _event("k", 10, region="eu-west-1", route="/v1")
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "value": 1000001})
    assert not validator.is_valid({**good, "properties": {"region": "eu-west-1"}})
    assert not validator.is_valid({**good, "metric_key": "storage_gb"})
    missing = clients.api.get("/v1/metrics/api_calls/versions/9/schema", headers=clients.admin)
    assert missing.status_code == 404
    exported = clients.api.get("/v1/metrics/api_calls/contract", headers=clients.admin)
    assert exported.status_code == 200
    assert exported.headers["Content-Type"].startswith("application/yaml")
    document = yaml.safe_load(exported.get_data(as_text=True))
    contract = OpenDataContractStandard.model_validate(document)
    standard = json.loads(
        importlib.resources.files("open_data_contract_standard").joinpath("schema.json").read_text()
    )
    jsonschema_rs.validate(standard, document)
    assert (contract.kind, contract.apiVersion, contract.version) == (
        "DataContract",
        "v3.0.2",
        "1.0.0",
    )
    fields = {p.name: p for p in contract.schema_[0].properties}
    assert fields["value"].logicalType == "integer"
    assert fields["value"].logicalTypeOptions == {"minimum": 0, "maximum": 1000000}
    nested = {p.name: p for p in fields["properties"].properties}
    assert nested["region"].required and nested["route"].logicalTypeOptions == {"pattern": "^/"}
    assert document["team"] == [{"username": "team-gateway", "role": "owner"}]
    custom = {c["property"]: c["value"] for c in document["customProperties"]}
    assert custom["abaxusProducers"] == ["gateway-eu"]
    assert custom["abaxusJsonSchema"].endswith("/v1/metrics/api_calls/versions/1/schema")
