"""Calculate end to end: a plan with all seven models priced over real events against
hand-computed amounts; idempotent stored calculations; the events behind a line
recompute its checksum; overrides; proration; a meter version change inside a period;
verify; the invoice.requested CloudEvent."""

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from functions_framework import create_app
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.config import reload_settings
from core.domain.metrics import MetricVersionDefinition
from core.services import api_keys, ingest, notify, pricing
from core.services.caller import SYSTEM
from core.services.catalog import metrics
from tests.conftest import PROJECT_ROOT, bearer
from tests.contract.http_servers import Recorder, serve
from tests.fixtures.samples import API_EXAMPLE_CHARGES, create_metric
from tests.integration.catalog_client import MAIN, Api

JUNE = datetime(2026, 6, 1, tzinfo=UTC)
JULY = datetime(2026, 7, 1, tzinfo=UTC)
NOW = datetime(2026, 7, 15, tzinfo=UTC)


def _events(customer="cust_acme"):
    prefix = "" if customer == "cust_acme" else f"{customer}-"

    def event(key, metric, value, day, hour=12, **properties):
        return {
            "customer_id": customer,
            "metric_key": metric,
            "value": str(value),
            "timestamp": (JUNE + timedelta(days=day, hours=hour)).isoformat(),
            "idempotency_key": prefix + key,
            "properties": properties,
        }

    events = [event(f"api-{n}", "api_calls", 1, n % 30, n % 24) for n in range(1234)]
    events += [
        event("st-1", "storage_gb", "600", 2),
        event("st-2", "storage_gb", "650.5", 20),
        event("seat-1", "seats", 8, 1),
        event("seat-2", "seats", 12, 10),
        event("seat-3", "seats", 11, 25),
        event("mail-1", "emails", 1000, 3),
        event("mail-2", "emails", 1001, 4),
        event("cs-1", "compute_seconds", 1000, 5, region="us", tier="gpu"),
        event("cs-2", "compute_seconds", 500, 6, region="us", tier="cpu"),
        event("cs-3", "compute_seconds", 2000, 7, region="eu", tier="gpu"),
        event("tok-1", "tokens", 3000000, 8),
        # Outside the period: not counted.
        event("api-july", "api_calls", 1, 30, 1),
        event("api-may", "api_calls", 1, -1),
    ]
    return events


@pytest.fixture
def seeded(db):
    for key, aggregation in [
        ("api_calls", "sum"),
        ("storage_gb", "sum"),
        ("seats", "max"),
        ("emails", "sum"),
        ("tokens", "sum"),
    ]:
        create_metric(key, aggregation=aggregation)
    create_metric("compute_seconds", group_by=["region", "tier"])
    api = Api(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)
    api.post(
        "/v1/price-plans",
        {
            "code": "all",
            "name": "All",
            "currency": "USD",
            "interval": "month",
            "charges": API_EXAMPLE_CHARGES,
        },
    )
    api.post(
        "/v1/customers",
        {"id": "cust_acme", "name": "Acme", "currency": "USD", "email": "b@acme.test"},
    )
    subscription = api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "all", "starts_at": JUNE.isoformat()},
    )
    outcomes = ingest.ingest(_events(), now=NOW)
    assert {o.outcome for o in outcomes} == {"accepted"}
    client = create_app(target="calculate", source=MAIN).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(
        api_keys.create_key(SYSTEM, name="reader", scopes=["read"]).secret
    )["Authorization"]
    return {"api": api, "subscription": subscription, "client": client}


def _twin(api, customer_id):
    """Another customer with the same June usage as cust_acme (one customer holds one
    subscription per metric at a time)."""
    api.post("/v1/customers", {"id": customer_id, "name": "Twin", "currency": "USD"})
    outcomes = ingest.ingest(_events(customer_id), now=NOW)
    assert {o.outcome for o in outcomes} == {"accepted"}
    return customer_id


def _calculate(client, subscription_id, start=JUNE, end=JULY, expect=200):
    response = client.post(
        "/v1/pricing/calculate",
        json={
            "subscription_id": subscription_id,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
        },
    )
    assert response.status_code == expect, response.get_data(as_text=True)
    return response.get_json()


def test_all_seven_models_priced_end_to_end(seeded):
    result = _calculate(seeded["client"], seeded["subscription"]["id"])
    by_charge = {line["charge"]: line for line in result["lines"]}
    expected = {
        "api_calls": ("1234", "1.23"),  # 1234 * 0.001 = 1.234 -> 1.23
        "storage_gb": ("1250.5", "112.53"),  # 1000 * 0.10 + 250.5 * 0.05 = 112.525 -> 112.53
        "seats": ("12", "108"),  # max 12 > 10: all 12 at 9 (volume)
        "emails": ("2001", "15"),  # ceil(2001 / 1000) = 3 packages * 5.00
        "Platform fee": ("1", "99"),  # whole period covered
        "compute_seconds": ("3500", "4.5"),  # 1000*0.002 + 500*0.001 + 2000*0.001
        "tokens": ("3000000", "14"),  # (3,000,000 - 1,000,000) * 0.000002 + 10
    }
    assert {c: (line["quantity"], line["amount"]) for c, line in by_charge.items()} == expected
    # 1.23 + 112.53 + 108 + 15 + 99 + 4.50 + 14 = 354.26: the sum of the rounded lines.
    assert (result["subtotal"], result["total"], result["currency"]) == ("354.26", "354.26", "USD")
    assert [line["line"] for line in result["lines"]] == list(range(1, 8))
    assert by_charge["api_calls"]["event_count"] == 1234
    assert by_charge["storage_gb"]["breakdown"] == [
        {
            "from": "0",
            "to": "1000",
            "quantity": "1000",
            "unit_price": "0.1",
            "flat_fee": "0",
            "amount": "100",
        },
        {
            "from": "1000",
            "to": None,
            "quantity": "250.5",
            "unit_price": "0.05",
            "flat_fee": "0",
            "amount": "12.525",
        },
    ]
    assert [(r["group"], r["unit_price"]) for r in by_charge["compute_seconds"]["breakdown"]] == [
        ({"region": "eu", "tier": "gpu"}, "0.001"),
        ({"region": "us", "tier": "cpu"}, "0.001"),
        ({"region": "us", "tier": "gpu"}, "0.002"),
    ]
    exact = (
        create_app(target="aggregate", source=MAIN)
        .test_client()
        .get(
            "/v1/usage/summary",
            query_string={
                "customer_id": "cust_acme",
                "metric_key": "api_calls",
                "mode": "exact",
                "from": JUNE.isoformat(),
                "to": JULY.isoformat(),
            },
            headers={"Authorization": seeded["client"].environ_base["HTTP_AUTHORIZATION"]},
        )
        .get_json()
    )
    assert by_charge["api_calls"]["events_checksum"] == exact["checksum"]
    assert result["checksum"].startswith("sha256:") and result["id"].startswith("calc_")


def test_the_same_inputs_give_the_same_calculation_and_a_new_event_a_new_one(seeded):
    client, subscription_id = seeded["client"], seeded["subscription"]["id"]
    first = _calculate(client, subscription_id)
    again = _calculate(client, subscription_id)
    assert again == first
    # Byte for byte: the stored calculation is what every later call returns.
    body = {
        "subscription_id": subscription_id,
        "period_start": JUNE.isoformat(),
        "period_end": JULY.isoformat(),
    }
    raw = [client.post("/v1/pricing/calculate", json=body).get_data() for _ in range(2)]
    assert raw[0] == raw[1] and json.loads(raw[0]) == first
    assert client.get(f"/v1/pricing/calculations/{first['id']}").get_json() == first
    ingest.ingest(
        [
            {
                "customer_id": "cust_acme",
                "metric_key": "api_calls",
                "value": "1000",
                "timestamp": (JUNE + timedelta(days=9)).isoformat(),
                "idempotency_key": "api-late",
            }
        ],
        now=NOW,
    )
    changed = _calculate(client, subscription_id)
    assert changed["id"] != first["id"] and changed["checksum"] != first["checksum"]
    assert changed["lines"][0]["amount"] == "2.23"  # (1234 + 1000) * 0.001 = 2.234
    # The earlier calculation is immutable and still there.
    assert client.get(f"/v1/pricing/calculations/{first['id']}").get_json() == first
    with get_database().transaction() as connection:
        assert connection.execute(text("SELECT count(*) FROM calculations")).scalar_one() == 2


def test_the_events_behind_a_line_recompute_its_checksum(seeded):
    client = seeded["client"]
    result = _calculate(client, seeded["subscription"]["id"])
    for line in (result["lines"][0], result["lines"][5]):  # api_calls, compute_seconds
        events, cursor, pages = [], None, 0
        while True:
            query = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = client.get(
                f"/v1/pricing/calculations/{result['id']}/lines/{line['line']}/events",
                query_string=query,
            ).get_json()
            events += page["data"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(events) == line["event_count"]
        order = [(e["timestamp"], e["idempotency_key"].encode()) for e in events]
        assert order == sorted(order)
        # docs/concepts.md: digest = SHA-256(key TAB timestamp TAB value LF) as an integer,
        # summed per meter version; checksum = SHA-256 of "version TAB count TAB sum-hex LF".
        per_version = {}
        for e in events:
            digest = hashlib.sha256(
                f"{e['idempotency_key']}\t{e['timestamp']}\t{e['value']}\n".encode()
            ).digest()
            count, total = per_version.get(e["meter_version"], (0, 0))
            per_version[e["meter_version"]] = (count + 1, total + int.from_bytes(digest, "big"))
        lines = "".join(
            f"{v}\t{c}\t{t % 2**256:064x}\n" for v, (c, t) in sorted(per_version.items())
        )
        assert "sha256:" + hashlib.sha256(lines.encode()).hexdigest() == line["events_checksum"]
    assert pages == 1 or result["lines"][0]["event_count"] > 500
    flat = client.get(f"/v1/pricing/calculations/{result['id']}/lines/5/events").get_json()
    assert flat == {"data": [], "next_cursor": None}
    missing = client.get(f"/v1/pricing/calculations/{result['id']}/lines/9/events")
    assert missing.status_code == 404


def test_overrides_replace_the_charge_fields_and_show_in_the_line(seeded):
    api = seeded["api"]
    special = api.post(
        "/v1/subscriptions",
        {
            "customer_id": _twin(api, "cust_special"),
            "plan_code": "all",
            "starts_at": JUNE.isoformat(),
            "overrides": [{"metric_key": "api_calls", "unit_price": "0.002"}],
        },
    )
    line = _calculate(seeded["client"], special["id"])["lines"][0]
    assert line["amount"] == "2.47"  # 1234 * 0.002 = 2.468 -> 2.47
    assert line["charge_definition"]["unit_price"] == "0.002"


def test_a_flat_fee_is_prorated_for_a_mid_period_start(seeded):
    api = seeded["api"]
    late = api.post(
        "/v1/subscriptions",
        {
            "customer_id": _twin(api, "cust_late"),
            "plan_code": "all",
            "starts_at": "2026-06-10T00:00:00Z",
        },
    )
    result = _calculate(seeded["client"], late["id"])
    by_charge = {line["charge"]: line for line in result["lines"]}
    fee = by_charge["Platform fee"]
    # June 10 - July 1 = 21 of 30 days: 99 * 21 / 30 = 69.30
    assert fee["amount"] == "69.3" and fee["breakdown"][0]["covered_days"] == 21
    # Usage before the subscription started is not billed under it: the api_calls events
    # fall on June 1 + (n % 30) days, so only those of day index >= 9 (June 10 on) count.
    expected_calls = sum(1 for n in range(1234) if n % 30 >= 9)
    assert by_charge["api_calls"]["quantity"] == str(expected_calls)
    assert result["coverage"] == {"start": "2026-06-10T00:00:00Z", "end": "2026-07-01T00:00:00Z"}


def test_a_meter_version_change_inside_the_period_gives_lines_under_their_versions(seeded):
    # seats: max until June 20, then sum (they aggregate differently: one line each).
    metrics.add_version(
        SYSTEM,
        "seats",
        MetricVersionDefinition.model_validate(
            {"name": "seats", "aggregation": "sum", "effective_from": "2026-06-20T00:00:00Z"}
        ),
    )
    # api_calls: a second version of the same aggregation: one line, both versions.
    metrics.add_version(
        SYSTEM,
        "api_calls",
        MetricVersionDefinition.model_validate(
            {"name": "api_calls", "aggregation": "sum", "effective_from": "2026-06-15T00:00:00Z"}
        ),
    )
    result = _calculate(seeded["client"], seeded["subscription"]["id"])
    seats = [line for line in result["lines"] if line["charge"] == "seats"]
    # max(8, 12) = 12 before June 20 -> 12 * 9 = 108; sum(11) = 11 after -> 11 * 9 = 99
    assert [(s["meter_version"], s["quantity"], s["amount"]) for s in seats] == [
        (1, "12", "108"),
        (2, "11", "99"),
    ]
    calls = next(line for line in result["lines"] if line["charge"] == "api_calls")
    assert (calls["meter_versions"], calls["meter_version"], calls["quantity"]) == (
        [1, 2],
        2,
        "1234",
    )
    assert [line["line"] for line in result["lines"]] == list(range(1, 9))


def test_verify_recomputes_and_names_the_line_that_differs(seeded):
    result = _calculate(seeded["client"], seeded["subscription"]["id"])
    assert pricing.verify(result["id"]).ok
    cli = subprocess.run(
        [sys.executable, "-m", "functions.cli", "verify", "calculation", result["id"]],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0 and cli.stdout.startswith("ok:"), cli.stdout + cli.stderr
    with get_database().transaction() as connection:
        connection.execute(text("ALTER TABLE calculations DISABLE TRIGGER calculations_no_update"))
        connection.execute(
            text(
                "UPDATE calculations SET body = jsonb_set(body::jsonb, '{lines,1,amount}', '\"1.00\"')::json "
                "WHERE id = :id"
            ),
            {"id": result["id"]},
        )
        connection.execute(text("ALTER TABLE calculations ENABLE TRIGGER calculations_no_update"))
    report = pricing.verify(result["id"])
    assert not report.ok
    assert report.differences[0].startswith(
        "line 2 (storage_gb): amount stored '1.00', recomputed '112.53'"
    )
    cli = subprocess.run(
        [sys.executable, "-m", "functions.cli", "verify", "calculation", result["id"]],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 1 and "line 2 (storage_gb)" in cli.stdout


def test_errors_are_clear(seeded):
    client = seeded["client"]
    missing = client.post("/v1/pricing/calculate", json={"subscription_id": "sub_nope"})
    assert missing.status_code == 404 and missing.get_json()["code"] == "unknown_subscription"
    half = client.post(
        "/v1/pricing/calculate",
        json={"subscription_id": seeded["subscription"]["id"], "period_start": JUNE.isoformat()},
    )
    assert half.status_code == 422
    backwards = _calculate(client, seeded["subscription"]["id"], JULY, JUNE, expect=422)
    assert backwards["errors"][0]["loc"] == ["body", "period_end"]


def test_invoice_requested_calculates_and_redelivery_announces_the_same_id(seeded, monkeypatch):
    recorder = Recorder()
    with serve(recorder) as sink:
        monkeypatch.setenv("K_SINK", sink)
        reload_settings()
        monkeypatch.setattr(notify, "_bus", None)
        try:
            calculate = create_app(target="calculate", source=MAIN).test_client()
            event = CloudEvent(
                {"type": "dev.abaxus.invoice.requested.v1", "source": "/invoice", "id": "req-1"},
                {
                    "subscription_id": seeded["subscription"]["id"],
                    "period_start": JUNE.isoformat(),
                    "period_end": JULY.isoformat(),
                },
            )
            headers, body = to_binary(event)
            assert calculate.post("/", headers=headers, data=body).status_code == 202
            assert calculate.post("/", headers=headers, data=body).status_code == 202
        finally:
            monkeypatch.delenv("K_SINK")
            reload_settings()
            notify._bus = None
    announced = [
        (h.get("Ce-Type") or h.get("ce-type"), h.get("Ce-Id") or h.get("ce-id"), json.loads(b))
        for h, b in recorder.received
    ]
    assert len(announced) == 2 and announced[0] == announced[1]
    type_, event_id, data = announced[0]
    assert type_ == "dev.abaxus.calculation.completed.v1"
    assert event_id == f"calculation-{data['calculation_id']}" and data["total"] == "354.26"
    with get_database().transaction() as connection:
        assert connection.execute(text("SELECT count(*) FROM calculations")).scalar_one() == 1
    bad = CloudEvent(
        {"type": "dev.abaxus.invoice.requested.v1", "source": "/invoice", "id": "req-2"},
        {"subscription_id": "sub_missing"},
    )
    headers, body = to_binary(bad)
    response = (
        create_app(target="calculate", source=MAIN)
        .test_client()
        .post("/", headers=headers, data=body)
    )
    assert response.status_code == 422  # dead-lettered, never retried forever
    assert D(data["total"]) == D("354.26")
