"""Charging: Stripe through the real `stripe` SDK against a local server that implements
the one endpoint used (and, like Stripe, answers a repeated idempotency key with the same
PaymentIntent); a crash between the call and the commit; declines and dunning; webhooks
with verified signatures; manual payments."""

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.config import reload_settings
from core.services import charging, jobs
from core.services.caller import SYSTEM
from core.services.invoicing import lifecycle as invoicing
from tests.contract.http_servers import serve
from tests.fixtures.providers import FakeStripe

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture
def stripe_server(monkeypatch):
    fake = FakeStripe()
    with serve(fake) as url:
        monkeypatch.setenv("STRIPE_API_KEY", "sk_test_abaxus")
        monkeypatch.setenv("STRIPE_API_BASE", url)
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        reload_settings()
        yield fake
    for name in ("STRIPE_API_KEY", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name)
    reload_settings()


def _stripe_invoice(client, subscription_id, payment_method="pm_card_visa"):
    client.api.patch(
        "/v1/customers/cust_acme",
        {
            "billing_provider": "stripe",
            "provider_customer_id": "cus_acme",
            "payment_method": payment_method,
        },
    )
    return invoicing.issue(SYSTEM, client.draft(subscription_id)["id"])


def _run_attempts():
    return jobs.drain(charging.CHARGE_QUEUE, {charging.ATTEMPT_JOB: charging.run_attempt})


def _payments():
    with get_database().transaction() as connection:
        return connection.execute(
            text(
                "SELECT attempt, status, idempotency_key, provider_id, error FROM payments ORDER BY attempt"
            )
        ).all()


def test_a_stripe_charge_through_the_sdk_pays_the_invoice(billing, stripe_server):
    client, subscription_id = billing
    issued = _stripe_invoice(client, subscription_id)
    queued = client.call("POST", f"/v1/invoices/{issued['id']}/charge", expect=202)
    assert queued == {"invoice_id": issued["id"], "attempt": 1, "queued": True}
    ((key, form, authorization),) = stripe_server.requests
    assert key == f"abaxus-{issued['id']}-attempt-1"
    assert authorization == "Bearer sk_test_abaxus"
    assert (form["amount"], form["currency"], form["customer"], form["payment_method"]) == (
        "1300",  # 13 USD in cents
        "usd",
        "cus_acme",
        "pm_card_visa",
    )
    assert (form["off_session"], form["confirm"], form["metadata[invoice_id]"]) == (
        "true",
        "true",
        issued["id"],
    )
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "paid"
    assert [(p.attempt, p.status, p.provider_id) for p in _payments()] == [(1, "succeeded", "pi_1")]


class WorkerDied(BaseException):
    """Not an Exception: like a killed process, nothing in the worker catches it."""


def test_a_crash_between_the_call_and_the_commit_does_not_charge_twice(
    billing, stripe_server, monkeypatch
):
    client, subscription_id = billing
    issued = _stripe_invoice(client, subscription_id)
    charging.request_charge(SYSTEM, issued["id"])
    real_settle = charging.settle

    def die(*args, **kwargs):
        raise WorkerDied

    monkeypatch.setattr(charging, "settle", die)
    with pytest.raises(WorkerDied):
        _run_attempts()
    # The provider was called; nothing after the call committed, but the attempt's row
    # and key did (before the call).
    assert len(stripe_server.requests) == 1
    assert [(p.attempt, p.status) for p in _payments()] == [(1, "pending")]
    monkeypatch.setattr(charging, "settle", real_settle)
    assert _run_attempts().done == 1  # the job was still pending: it runs again
    keys = [key for key, _, _ in stripe_server.requests]
    assert keys == [f"abaxus-{issued['id']}-attempt-1"] * 2 and stripe_server.charges == 1
    assert [(p.attempt, p.status, p.provider_id) for p in _payments()] == [(1, "succeeded", "pi_1")]
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "paid"


def test_a_decline_fails_the_invoice_and_schedules_the_next_attempt(billing, stripe_server):
    client, subscription_id = billing
    issued = _stripe_invoice(client, subscription_id, payment_method="pm_card_chargeDeclined")
    charging.request_charge(SYSTEM, issued["id"])
    _run_attempts()
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "payment_failed"
    ((attempt, status, _, _, error),) = _payments()
    assert (attempt, status, error) == (1, "failed", "Your card was declined.")
    with get_database().transaction() as connection:
        retry = connection.execute(
            text(
                "SELECT payload, run_after FROM jobs WHERE queue = 'charge' AND status = 'pending'"
            )
        ).one()
    assert retry.payload["attempt"] == 2
    assert timedelta(hours=23) < retry.run_after - datetime.now(UTC) <= timedelta(days=1)


def test_payments_are_listed_and_read_through_the_charge_function(billing, stripe_server):
    from functions_framework import create_app

    from tests.integration.catalog_client import MAIN

    client, subscription_id = billing
    issued = _stripe_invoice(client, subscription_id, payment_method="pm_card_chargeDeclined")
    charging.request_charge(SYSTEM, issued["id"])
    _run_attempts()
    client.api.patch("/v1/customers/cust_acme", {"payment_method": "pm_card_visa"})
    # The retry dunning scheduled for tomorrow runs now when an operator asks for it.
    retried = client.call("POST", f"/v1/invoices/{issued['id']}/charge", expect=202)
    assert (retried["attempt"], retried["queued"]) == (2, True)
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "paid"
    charge = create_app(target="charge", source=MAIN).test_client()

    def get(path, expect=200):
        response = charge.get(path, headers=client.headers)
        assert response.status_code == expect, response.get_data(as_text=True)
        return response.get_json()

    listed = get(f"/v1/payments?invoice_id={issued['id']}")["data"]
    assert sorted((p["attempt"], p["status"], p["error"]) for p in listed) == [
        (1, "failed", "Your card was declined."),
        (2, "succeeded", None),
    ]
    for payment in listed:
        assert payment["id"].startswith("pay_") and payment["customer_id"] == "cust_acme"
        assert (payment["amount"], payment["currency"], payment["provider"]) == (
            "13",
            "USD",
            "stripe",
        )
        assert payment["idempotency_key"] == f"abaxus-{issued['id']}-attempt-{payment['attempt']}"
        assert get(f"/v1/payments/{payment['id']}") == payment
    assert [p["attempt"] for p in get("/v1/payments?status=failed")["data"]] == [1]
    assert get("/v1/payments?customer_id=cust_other")["data"] == []
    first = get("/v1/payments?customer_id=cust_acme&limit=1")
    second = get(f"/v1/payments?customer_id=cust_acme&limit=1&cursor={first['next_cursor']}")
    assert [first["data"][0]["id"], second["data"][0]["id"]] == sorted(p["id"] for p in listed)
    assert second["next_cursor"] is None
    assert get("/v1/payments/pay_nope", expect=404)["code"] == "not_found"
    refused = get("/v1/payments?status=paid", expect=422)
    assert refused["errors"][0]["loc"] == ["query", "status"]


def _signed(payload, secret=WEBHOOK_SECRET, at=None):
    at = at or int(time.time())
    signature = hmac.new(secret.encode(), f"{at}.{payload}".encode(), hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={signature}", "Content-Type": "application/json"}


def test_a_webhook_settles_a_processing_payment_and_forged_ones_are_refused(billing, stripe_server):
    from functions_framework import create_app

    from tests.integration.catalog_client import MAIN

    client, subscription_id = billing
    issued = _stripe_invoice(client, subscription_id, payment_method="pm_processing")
    charging.request_charge(SYSTEM, issued["id"])
    _run_attempts()
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "issued"
    assert [(p.status, p.provider_id) for p in _payments()] == [("awaiting", "pi_1")]
    charge = create_app(target="charge", source=MAIN).test_client()
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1", "object": "payment_intent", "status": "succeeded"}},
        }
    )
    forged = charge.post(
        "/v1/webhooks/stripe", data=payload, headers=_signed(payload, secret="whsec_wrong")
    )
    assert forged.status_code == 401 and forged.get_json()["code"] == "invalid_signature"
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "issued"
    accepted = charge.post("/v1/webhooks/stripe", data=payload, headers=_signed(payload))
    assert accepted.status_code == 200 and accepted.get_json()["outcome"] == "settled"
    assert client.call("GET", f"/v1/invoices/{issued['id']}")["status"] == "paid"
    again = charge.post("/v1/webhooks/stripe", data=payload, headers=_signed(payload))
    assert again.get_json()["outcome"] == "already_settled"


def test_manual_invoices_wait_for_mark_paid(billing):
    client, subscription_id = billing
    issued = invoicing.issue(SYSTEM, client.draft(subscription_id)["id"])
    charging.request_charge(SYSTEM, issued["id"])
    _run_attempts()
    assert [p.status for p in _payments()] == ["awaiting"]
    paid = client.call(
        "POST", f"/v1/invoices/{issued['id']}/mark-paid", {"reference": "wire 2026-07-03 #88"}
    )
    assert paid["status"] == "paid" and paid["amount_due"] == "0"
    assert [p.status for p in _payments()] == ["succeeded"]
    refused = client.invoice.post(f"/v1/invoices/{issued['id']}/charge", headers=client.headers)
    assert refused.status_code == 409 and refused.get_json()["code"] == "invoice_paid"
    # Paid invoices cannot be voided: the database-backed rule holds through the API too.
    voided = client.invoice.post(
        f"/v1/invoices/{issued['id']}/void", json={"reason": "x"}, headers=client.headers
    )
    assert voided.status_code == 409 and voided.get_json()["code"] == "invoice_paid"
