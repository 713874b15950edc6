"""`abaxus dev` over real HTTP: what `make run` gives a new user."""

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from aiosmtpd.controller import Controller
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from core.services.cloudevents import handled_events
from tests.contract.http_servers import serve
from tests.e2e.conftest import free_port, start_dev_server
from tests.fixtures.providers import FakeStripe, Inbox


def test_a_fresh_system_serves_health_metrics_and_the_printed_key(dev_server):
    base = dev_server.base_url
    assert dev_server.started_seconds < 60
    assert requests.get(base + "/healthz", timeout=5).json() == {"status": "ok", "function": "api"}
    ready = requests.get(base + "/readyz", timeout=5).json()
    assert ready["status"] == "ready" and ready["schema"] == "current"

    key = dev_server.printed_key()
    listed = requests.get(
        base + "/v1/api-keys", headers={"Authorization": f"Bearer {key}"}, timeout=5
    )
    assert listed.status_code == 200
    assert [k["name"] for k in listed.json()["data"]] == ["dev-admin (created by abaxus dev)"]

    refused = requests.get(base + "/v1/api-keys", timeout=5)
    assert refused.status_code == 401
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "unauthenticated"

    metrics = requests.get(base + "/metrics", timeout=5)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert (
        'abaxus_http_requests_total{function="api",method="GET",'
        'route="/v1/api-keys",status="401"} 1.0' in metrics.text
    )


def test_each_path_is_served_by_the_function_that_owns_it(dev_server):
    key = dev_server.printed_key()
    headers = {"Authorization": f"Bearer {key}"}
    events = requests.get(
        dev_server.base_url + "/v1/events?customer_id=c1", headers=headers, timeout=5
    )
    usage = requests.get(dev_server.base_url + "/v1/usage/summary", headers=headers, timeout=5)
    assert events.status_code == 200 and events.json() == {"data": [], "next_cursor": None}
    assert usage.status_code == 422 and usage.json()["errors"][0]["loc"] == ["query", "customer_id"]
    payments = requests.get(dev_server.base_url + "/v1/payments", headers=headers, timeout=5)
    assert payments.status_code == 200 and payments.json() == {"data": [], "next_cursor": None}
    missing = requests.get(dev_server.base_url + "/v1/payments/pay_x", headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    unknown = requests.get(dev_server.base_url + "/v2/anything", headers=headers, timeout=5)
    assert unknown.status_code == 404 and unknown.json()["code"] == "route_not_found"


def test_a_cloudevent_sent_to_the_server_reaches_its_function_through_the_broker(dev_server):
    event = CloudEvent(
        {
            "type": "dev.abaxus.billing.tick.v1",
            "source": "/e2e",
            "id": "e2e-tick-1",
            "datacontenttype": "application/json",
        },
        {"tick": "billing"},
    )
    headers, body = to_structured(event)
    response = requests.post(dev_server.base_url + "/", headers=headers, data=body, timeout=5)
    assert response.status_code == 202 and response.content == b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _deliveries():
        time.sleep(0.1)
    # the invoice function ran it (its tick is idempotent and keeps no inbox row)
    assert _deliveries() == [("invoice-manual-billing-tick", "done")]
    assert handled_events("aggregate") == []


def _deliveries():
    from sqlalchemy import text

    from core.adapters.postgres.database import get_database

    with get_database().transaction() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT payload->>'trigger', status FROM jobs WHERE queue = 'broker' "
                    "AND status = 'done' ORDER BY id"
                )
            )
        ]


def test_the_server_stops_cleanly_on_sigterm(dev_server):
    assert dev_server.stop() == 0


def test_ctrl_c_stops_every_process_of_the_server_at_once(dev_server):
    """Ctrl-C in the terminal of `make run` signals the whole process group: the arbiter
    and its workers each get SIGINT, and the workers then the arbiter's SIGQUIT as well.
    Everything exits well within gunicorn's 30 s graceful timeout, which is what a worker
    hung in its second quit handler used to wait for."""
    group = os.getpgid(dev_server.process.pid)
    requests.get(dev_server.base_url + "/healthz", timeout=5)  # workers have served
    started = time.monotonic()
    os.killpg(group, signal.SIGINT)
    dev_server.process.wait(timeout=30)
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 5
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(group), "a process of the server outlived Ctrl-C"


def test_closing_the_terminal_stops_the_server_instead_of_reloading_it(dev_server):
    """A closed terminal sends SIGHUP, on which gunicorn reloads: the dev server would
    outlive the terminal of `make run`, holding its port. It stops as on Ctrl-C."""
    group = os.getpgid(dev_server.process.pid)
    requests.get(dev_server.base_url + "/healthz", timeout=5)
    os.killpg(group, signal.SIGHUP)
    dev_server.process.wait(timeout=30)
    deadline = time.monotonic() + 5
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(group), "a process of the server outlived the hangup"
    with pytest.raises(requests.ConnectionError):
        requests.get(dev_server.base_url + "/healthz", timeout=2)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_ingested_events_reach_the_realtime_summary_through_the_broker(dev_server):
    """POST /v1/events/batch -> events.ingested -> local broker -> aggregate folds ->
    the real-time summary (whole hours, from rollups) equals the exact one."""
    headers = {"Authorization": f"Bearer {dev_server.printed_key()}"}
    base = dev_server.base_url
    created = requests.post(
        base + "/v1/metrics",
        headers=headers,
        json={
            "key": "scans",
            "name": "Scans",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    events = [
        {
            "customer_id": "cust_e2e",
            "metric_key": "scans",
            "value": f"{n}.5",
            "timestamp": (start + timedelta(minutes=7 * n)).isoformat(),
            "idempotency_key": f"e2e-scan-{n}",
        }
        for n in range(20)
    ]
    batch = requests.post(
        base + "/v1/events/batch", headers=headers, json={"events": events}, timeout=10
    )
    assert batch.status_code == 207 and batch.json()["accepted"] == 20
    params = {
        "customer_id": "cust_e2e",
        "metric_key": "scans",
        "from": start.isoformat(),
        "to": (start + timedelta(hours=3)).isoformat(),
    }
    deadline = time.monotonic() + 30
    while True:
        realtime = requests.get(
            base + "/v1/usage/summary", headers=headers, params=params, timeout=10
        ).json()
        if realtime["event_count"] == 20 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    exact = requests.get(
        base + "/v1/usage/summary", headers=headers, params={**params, "mode": "exact"}, timeout=10
    ).json()
    assert (realtime["value"], realtime["event_count"]) == (exact["value"], 20)
    assert Decimal(realtime["value"]) == sum(n + Decimal("0.5") for n in range(20)) == 200
    parity = requests.get(
        base + "/v1/usage/parity",
        headers=headers,
        params={k: params[k] for k in ("customer_id", "from", "to")},
        timeout=10,
    ).json()
    assert parity["agree"] is True and parity["data"][0]["status"] == "agree"


@pytest.fixture
def billing_server(db, tmp_path):
    """The dev server with Stripe pointed at a fake Stripe API and SMTP at an inbox, both
    real servers on loopback."""
    stripe = FakeStripe()
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        with serve(stripe) as stripe_url:
            server = start_dev_server(
                db,
                tmp_path,
                ABAXUS_DEV_TICKS="false",
                STRIPE_API_KEY="sk_test_e2e",
                STRIPE_API_BASE=stripe_url,
                SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
            )
            try:
                yield server, stripe, inbox
            finally:
                server.stop()
    finally:
        smtp.stop()


def test_the_billing_tick_alone_issues_charges_and_pays_and_redeliveries_change_nothing(
    billing_server,
):
    """tick -> invoice.requested -> calculate -> calculation.completed -> invoice drafts,
    issues and emails -> invoice.issued -> charge pays through Stripe, all through the
    local broker, with no API call for the invoice itself."""
    server, stripe, inbox = billing_server
    headers = {"Authorization": f"Bearer {server.printed_key()}"}
    base = server.base_url

    def post(path, body):
        response = requests.post(base + path, headers=headers, json=body, timeout=10)
        assert response.status_code in {200, 201, 207}, response.text
        return response.json()

    post(
        "/v1/metrics",
        {
            "key": "scans",
            "name": "Scans",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
        },
    )
    post(
        "/v1/price-plans",
        {
            "code": "scan",
            "name": "Scan",
            "currency": "USD",
            "interval": "month",
            "charges": [{"metric_key": "scans", "model": "per_unit", "unit_price": "0.5"}],
        },
    )
    post(
        "/v1/customers",
        {
            "id": "cust_tick",
            "name": "Tick",
            "currency": "USD",
            "email": "ap@tick.test",
            "billing_provider": "stripe",
            "provider_customer_id": "cus_tick",
            "payment_method": "pm_card_visa",
        },
    )
    starts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=45)
    post(
        "/v1/subscriptions",
        {"customer_id": "cust_tick", "plan_code": "scan", "starts_at": starts.isoformat()},
    )
    events = [
        {
            "customer_id": "cust_tick",
            "metric_key": "scans",
            "value": 3,
            "timestamp": (starts + timedelta(days=n)).isoformat(),
            "idempotency_key": f"tick-scan-{n}",
        }
        for n in range(10)
    ]
    assert post("/v1/events/batch", {"events": events})["accepted"] == 10

    def send(event_type, event_id, data):
        event = CloudEvent(
            {
                "type": event_type,
                "source": "/e2e",
                "id": event_id,
                "datacontenttype": "application/json",
            },
            data,
        )
        ce_headers, body = to_structured(event)
        assert (
            requests.post(base + "/", headers=ce_headers, data=body, timeout=5).status_code == 202
        )

    def tick(event_id):
        send("dev.abaxus.billing.tick.v1", event_id, {"tick": "billing"})

    def invoices():
        return requests.get(
            base + "/v1/invoices", headers=headers, params={"customer_id": "cust_tick"}, timeout=10
        ).json()["data"]

    tick("billing-1")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and not any(i["status"] == "paid" for i in invoices()):
        time.sleep(0.3)
    (paid,) = invoices()
    # 10 events * 3 scans * 0.5 = 15
    assert (paid["status"], paid["total"], paid["number"], paid["amount_due"]) == (
        "paid",
        "15",
        "ABX-2026-000001",
        "0",
    )
    ((key, form, authorization),) = stripe.requests
    assert (key, authorization) == (f"abaxus-{paid['id']}-attempt-1", "Bearer sk_test_e2e")
    assert (form["amount"], form["currency"], form["customer"]) == ("1500", "usd", "cus_tick")
    payments = requests.get(
        base + "/v1/payments", headers=headers, params={"invoice_id": paid["id"]}, timeout=10
    ).json()["data"]
    assert [(p["status"], p["provider_id"], p["amount"]) for p in payments] == [
        ("succeeded", "pi_1", "15")
    ]
    # The email leaves after the issue commits, in the invoice function's thread, while the
    # charge pays from invoice.issued: the two race (rendering the PDF takes a moment).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not inbox.envelopes:
        time.sleep(0.1)
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == ["ap@tick.test"] and paid["number"].encode() in envelope.content
    assert b"Content-Type: application/pdf" in envelope.content
    tick("billing-1")  # redelivered
    tick("billing-2")  # the next, overlapping tick
    issued_again = {
        "invoice_id": paid["id"],
        "number": paid["number"],
        "customer_id": "cust_tick",
        "total": "15",
        "currency": "USD",
    }
    send("dev.abaxus.invoice.issued.v1", f"invoice-issued-{paid['id']}", issued_again)
    time.sleep(3)
    assert invoices() == [paid]
    assert len(stripe.requests) == 1 and stripe.charges == 1 and len(inbox.envelopes) == 1


def test_a_bulk_run_invoices_every_subscription_of_the_period_end(dev_server):
    headers = {"Authorization": f"Bearer {dev_server.printed_key()}"}
    base = dev_server.base_url

    def post(path, body, expect=(200, 201, 202, 207)):
        response = requests.post(base + path, headers=headers, json=body, timeout=10)
        assert response.status_code in expect, response.text
        return response.json()

    post(
        "/v1/metrics",
        {
            "key": "runs",
            "name": "Runs",
            "aggregation": "count",
            "effective_from": "2026-01-01T00:00:00Z",
        },
    )
    post(
        "/v1/price-plans",
        {
            "code": "run",
            "name": "Run",
            "currency": "EUR",
            "interval": "month",
            "charges": [{"metric_key": "runs", "model": "per_unit", "unit_price": "2"}],
        },
    )
    for n in range(3):
        post("/v1/customers", {"id": f"cust_run{n}", "name": f"Run {n}", "currency": "EUR"})
        post(
            "/v1/subscriptions",
            {
                "customer_id": f"cust_run{n}",
                "plan_code": "run",
                "starts_at": "2026-09-01T00:00:00Z",
            },
        )
        events = [
            {
                "customer_id": f"cust_run{n}",
                "metric_key": "runs",
                "timestamp": f"2026-09-{d + 1:02d}T10:00:00Z",
                "idempotency_key": f"run-{n}-{d}",
            }
            for d in range(n + 1)
        ]
        post("/v1/events/batch", {"events": events})
    # A subscription whose periods end elsewhere is not part of the run.
    post("/v1/customers", {"id": "cust_mid", "name": "Mid-month", "currency": "EUR"})
    post(
        "/v1/subscriptions",
        {"customer_id": "cust_mid", "plan_code": "run", "starts_at": "2026-09-15T00:00:00Z"},
    )
    run = post(
        "/v1/invoices/bulk", {"period_end": "2026-10-01T00:00:00Z", "issue": True, "charge": False}
    )
    assert run["subscriptions"] == 3
    deadline = time.monotonic() + 40
    while True:
        status = requests.get(
            f"{base}/v1/invoices/runs/{run['id']}", headers=headers, timeout=10
        ).json()
        if status["complete"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert (status["by_status"], status["failed"], status["complete"]) == ({"issued": 3}, 0, True)
    totals = sorted(
        i["total"]
        for n in range(3)
        for i in requests.get(
            f"{base}/v1/invoices",
            headers=headers,
            params={"customer_id": f"cust_run{n}"},
            timeout=10,
        ).json()["data"]
    )
    assert totals == ["2", "4", "6"]  # 1, 2 and 3 runs at 2 EUR
