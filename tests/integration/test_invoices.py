"""Invoices: drafts from exact calculations, gap-free numbers under concurrency, issued
invoices the database will not change, late usage as adjustments carried once by the next
invoice, credit carried forward, voids, explain."""

import threading
from datetime import datetime, timedelta
from decimal import Decimal as D

import psycopg
import pytest
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.services import aggregation, ingest
from core.services.caller import SYSTEM
from tests.fixtures.pdf import pdf_text
from tests.fixtures.providers import Inbox
from tests.integration.billing_setup import AUGUST, JULY, JUNE, NOW, _event


def test_a_draft_is_the_calculation_and_a_second_request_returns_it(billing):
    client, subscription_id = billing
    draft = client.draft(subscription_id)
    # 300 calls * 0.01 = 3 + platform fee 10 = 13
    assert (draft["status"], draft["number"], draft["total"], draft["subtotal"]) == (
        "draft",
        None,
        "13",
        "13",
    )
    assert [(line["charge"], line["amount"]) for line in draft["lines"]] == [
        ("api_calls", "3"),
        ("Platform fee", "10"),
    ]
    assert client.draft(subscription_id, expect=200) == draft
    explained = client.call("GET", f"/v1/invoices/{draft['id']}/explain")
    usage_line = explained["lines"][0]
    assert (usage_line["plan_version"], usage_line["meter_version"], usage_line["event_count"]) == (
        1,
        1,
        300,
    )
    events = client.calculate.get(usage_line["events_url"], headers=client.headers).get_json()
    assert len(events["data"]) == 100 and events["next_cursor"] is not None


def test_issue_numbers_the_invoice_and_it_can_never_change(billing, database_url):
    client, subscription_id = billing
    draft = client.draft(subscription_id)
    issued = client.call("POST", f"/v1/invoices/{draft['id']}/issue")
    assert issued["status"] == "issued" and issued["number"] == "ABX-2026-000001"
    issued_at = datetime.fromisoformat(issued["issued_at"])
    assert datetime.fromisoformat(issued["due_at"]) == issued_at + timedelta(days=30)
    assert client.call("POST", f"/v1/invoices/{draft['id']}/issue") == issued  # idempotent
    with psycopg.connect(database_url, autocommit=True) as connection:
        for statement in (
            "UPDATE invoices SET total = 0",
            "UPDATE invoices SET lines = '[]'::jsonb",
            "UPDATE invoices SET number = 'ABX-2026-999999'",
            "UPDATE invoices SET status = 'draft'",
            "DELETE FROM invoices",
        ):
            with pytest.raises(psycopg.Error) as refused:
                connection.execute(statement)
            assert refused.value.sqlstate == "AB001", statement
        connection.execute("UPDATE invoices SET status = 'paid', paid_at = now()")
        assert connection.execute("SELECT status, total FROM invoices").fetchone() == (
            "paid",
            D("13"),
        )


def test_numbers_are_gap_free_under_20_concurrent_issues(billing):
    client, _ = billing
    drafts = []
    for n in range(20):
        customer = f"cust_{n}"
        client.api.post("/v1/customers", {"id": customer, "name": customer, "currency": "USD"})
        subscription = client.api.post(
            "/v1/subscriptions",
            {"customer_id": customer, "plan_code": "basic", "starts_at": JUNE.isoformat()},
        )
        drafts.append(client.draft(subscription["id"])["id"])
    # A transaction that takes a number and rolls back gives it back.
    with pytest.raises(RuntimeError), get_database().transaction() as connection:
        from core.adapters.postgres.invoices import next_number

        assert next_number(connection, "ABX-2026") == 1
        raise RuntimeError("roll back")
    barrier = threading.Barrier(20)
    numbers, failures = [], []

    def issue(invoice_id):
        try:
            barrier.wait(10)
            from core.services.invoicing import lifecycle as invoicing

            numbers.append(invoicing.issue(SYSTEM, invoice_id)["number"])
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=issue, args=(d,)) for d in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert sorted(numbers) == [f"ABX-2026-{n:06d}" for n in range(1, 21)]


def test_late_usage_becomes_an_adjustment_carried_once_by_the_next_invoice(billing):
    client, subscription_id = billing
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    # 120 events for June arrive after the June invoice was issued.
    ingest.ingest([_event(f"late{n}", 20) for n in range(120)], now=NOW)
    aggregation.drain()
    adjustments = client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
    assert len(adjustments) == 1
    late = adjustments[0]
    assert (
        late["kind"],
        late["quantity_delta"],
        late["amount_delta"],
        late["original_invoice_id"],
    ) == (
        "late_usage",
        "120",
        "1.2",  # 120 * 0.01 under June's plan version and meter version 1
        june["id"],
    )
    assert late["description"] == f"Late usage for June 2026 ({june['number']}): api_calls +120"
    # More late events for the same period: only the new difference is adjusted.
    ingest.ingest([_event(f"later{n}", 21) for n in range(30)], now=NOW)
    aggregation.drain()
    assert sorted(
        a["amount_delta"]
        for a in client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
    ) == ["0.3", "1.2"]
    # The issued invoice did not change.
    assert client.call("GET", f"/v1/invoices/{june['id']}") == june
    july = client.draft(subscription_id, JULY, AUGUST)
    carried = [line for line in july["lines"] if line["type"] == "adjustment"]
    assert sorted(line["amount"] for line in carried) == ["0.3", "1.2"]
    # July: no usage, platform fee 10, plus 1.5 of June's late usage
    assert july["total"] == "11.5"
    # A draft only shows what it would carry; issuing takes the adjustments.
    listed = client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
    assert {a["status"] for a in listed} == {"pending"}
    july = client.call("POST", f"/v1/invoices/{july['id']}/issue")
    listed = client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
    assert [(a["status"], a["carried_by"]) for a in listed] == [
        ("applied", {"invoice_id": july["id"], "number": july["number"], "status": "issued"})
    ] * 2
    # Applied once: a draft for another period does not carry them again.
    august = client.draft(subscription_id, AUGUST, AUGUST + timedelta(days=31))
    assert [line for line in august["lines"] if line["type"] == "adjustment"] == []
    with get_database().transaction() as connection:
        applied = connection.execute(
            text("SELECT count(DISTINCT applied_invoice_id) FROM adjustments")
        ).scalar_one()
    assert applied == 1


def test_a_credit_bigger_than_the_invoice_is_carried_forward(billing):
    client, subscription_id = billing
    created = client.call(
        "POST",
        "/v1/adjustments",
        {"customer_id": "cust_acme", "amount": "-20", "reason": "goodwill: outage on June 3"},
        201,
    )
    assert (created["kind"], created["amount_delta"]) == ("manual", "-20")
    june = client.draft(subscription_id)
    # 13 of usage and fees - 20 of credit = -7: nothing due, 7 carried forward
    assert (june["subtotal"], june["total"], june["credit_carried"]) == ("-7", "0", "7")
    issued = client.call("POST", f"/v1/invoices/{june['id']}/issue")
    july = client.draft(subscription_id, JULY, AUGUST)
    credit = [line for line in july["lines"] if line["type"] == "adjustment"]
    assert [(line["kind"], line["amount"]) for line in credit] == [("credit_carried", "-7")]
    assert credit[0]["description"] == f"Credit carried forward from {issued['number']}"
    assert july["total"] == "3"  # platform fee 10 - 7


def test_an_adjustment_names_only_the_customers_own_invoice_and_subscription(billing):
    client, subscription_id = billing
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    base = {"customer_id": "cust_acme", "amount": "-2", "reason": "refund of a fee"}
    for extra, code, field in (
        ({"invoice_id": "inv_" + "0" * 120}, "unknown_invoice", "invoice_id"),
        ({"subscription_id": "sub_nope"}, "unknown_subscription", "subscription_id"),
        ({"invoice_id": june["id"], "currency": "EUR"}, "currency_mismatch", "currency"),
        ({"currency": "AAA"}, "validation_error", "currency"),
    ):
        refused = client.call("POST", "/v1/adjustments", {**base, **extra}, 422)
        assert refused["code"] == code
        assert [e["loc"][-1] for e in refused["errors"]] == [field]
    assert client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"] == []
    created = client.call(
        "POST",
        "/v1/adjustments",
        {**base, "invoice_id": june["id"], "subscription_id": subscription_id},
        201,
    )
    assert (created["original_invoice_id"], created["currency"], created["amount_delta"]) == (
        june["id"],
        june["currency"],
        "-2",
    )


def test_voiding(billing):
    client, subscription_id = billing
    client.call(
        "POST",
        "/v1/adjustments",
        {"customer_id": "cust_acme", "amount": "5", "reason": "setup"},
        201,
    )
    draft = client.draft(subscription_id)
    assert draft["total"] == "18"
    voided = client.call("POST", f"/v1/invoices/{draft['id']}/void", {"reason": "wrong period"})
    assert (voided["status"], voided["number"]) == ("void", None)
    # The draft's adjustment is pending again.
    pending = client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
    assert [a["applied_invoice_id"] for a in pending] == [None]
    july = client.draft(subscription_id, JULY, AUGUST)
    issued = client.call("POST", f"/v1/invoices/{july['id']}/issue")
    void_issued = client.call("POST", f"/v1/invoices/{july['id']}/void", {"reason": "duplicate"})
    assert (void_issued["status"], void_issued["number"], void_issued["amount_due"]) == (
        "void",
        issued["number"],
        "0",
    )
    notes = [
        a
        for a in client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
        if a["kind"] == "void_credit"
    ]
    assert [(n["amount_delta"], n["applied_invoice_id"]) for n in notes] == [("-15", july["id"])]
    refused = client.invoice.post(f"/v1/invoices/{july['id']}/issue", headers=client.headers)
    assert refused.status_code == 409 and refused.get_json()["code"] == "invoice_void"


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(monkeypatch):
    from aiosmtpd.controller import Controller

    from core.config import reload_settings

    port = _free_port()
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{port}")
    monkeypatch.setenv("ABAXUS_SELLER_NAME", "Seller & Co")
    reload_settings()
    yield inbox, controller
    if getattr(controller, "_thread", None) is not None:
        controller.stop()
    monkeypatch.delenv("SMTP_URL")
    monkeypatch.delenv("ABAXUS_SELLER_NAME")
    reload_settings()


def _drain_invoice_jobs():
    from core.services import jobs
    from functions.invoice import JOB_HANDLERS, QUEUE

    return jobs.drain(QUEUE, JOB_HANDLERS)


def test_an_issued_invoice_is_emailed_in_text_and_html_and_an_outage_is_retried(billing, smtp):
    import email
    from email import policy

    inbox, controller = smtp
    client, subscription_id = billing
    client.api.patch(
        "/v1/customers/cust_acme", {"email": "ap@acme.test", "name": "Acme <b>Inc</b>"}
    )
    draft = client.draft(subscription_id)
    # The SMTP server is down: the issue still succeeds, the email job waits to retry.
    from core.services.invoicing import lifecycle as invoicing

    issued = invoicing.issue(SYSTEM, draft["id"])
    assert issued["status"] == "issued"
    outage = _drain_invoice_jobs()
    assert (outage.claimed, outage.retried, outage.done) == (1, 1, 0)
    with get_database().transaction() as connection:
        job = connection.execute(
            text("SELECT status, attempts, last_error FROM jobs WHERE kind = 'email'")
        ).one()
    assert job.status == "pending" and job.attempts == 1 and "refused" in job.last_error.lower()
    # The server is back; the retry (made due now) delivers it.
    controller.start()
    with get_database().transaction() as connection:
        connection.execute(text("UPDATE jobs SET run_after = now() WHERE kind = 'email'"))
    assert _drain_invoice_jobs().done == 1
    (envelope,) = inbox.envelopes
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert envelope.rcpt_tos == ["ap@acme.test"]
    assert message["Subject"] == f"Invoice {issued['number']} from Seller & Co: 13.00 USD"
    text_part = message.get_body(preferencelist=("plain",)).get_content()
    html_part = message.get_body(preferencelist=("html",)).get_content()
    for part in (text_part, html_part):
        assert issued["number"] in part and "13" in part and issued["checksum"] in part
    assert "Total:           13.00 USD" in text_part
    assert "Acme &lt;b&gt;Inc&lt;/b&gt;" in html_part  # customer text is escaped in HTML
    (attachment,) = message.iter_attachments()  # the PDF of the same document
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"{issued['number']}.pdf"
    pdf = pdf_text(attachment.get_content())
    assert issued["number"] in pdf and "13.00 USD" in pdf and "Acme <b>Inc</b>" in pdf
    with get_database().transaction() as connection:
        sent = connection.execute(
            text("SELECT invoice_id, recipient, message_id FROM invoice_emails")
        ).one()
    assert (sent.invoice_id, sent.recipient, sent.message_id) == (
        issued["id"],
        "ap@acme.test",
        message["Message-ID"],
    )
    assert _drain_invoice_jobs().claimed == 0  # sent once


def test_late_usage_that_cannot_be_priced_in_the_fold_is_retried_by_a_job(billing, monkeypatch):
    from core.domain.errors import ValidationFailed
    from core.services import pricing

    client, subscription_id = billing
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    real_compute = pricing.compute

    def failing(*args, **kwargs):
        raise ValidationFailed("the formula failed", code="formula_error")

    monkeypatch.setattr(pricing, "compute", failing)
    ingest.ingest([_event(f"late{n}", 20) for n in range(40)], now=NOW)
    folded = aggregation.drain()
    assert folded.done >= 1 and folded.dead == 0  # the fold itself went through
    assert client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"] == []
    still_failing = _drain_invoice_jobs()
    assert (still_failing.claimed, still_failing.retried) == (1, 1)
    monkeypatch.setattr(pricing, "compute", real_compute)
    with get_database().transaction() as connection:
        connection.execute(text("UPDATE jobs SET run_after = now() WHERE kind = 'late_usage'"))
    assert _drain_invoice_jobs().done == 1
    (late,) = client.call("GET", "/v1/adjustments?customer_id=cust_acme")["data"]
    assert (late["kind"], late["quantity_delta"], late["amount_delta"]) == (
        "late_usage",
        "40",
        "0.4",
    )
    assert late["original_invoice_id"] == june["id"]
    assert _drain_invoice_jobs().claimed == 0  # recorded once


def test_issuing_over_http_sends_the_email_before_it_answers_and_an_outage_does_not_fail_it(
    billing, smtp
):
    inbox, controller = smtp
    client, subscription_id = billing
    client.api.patch("/v1/customers/cust_acme", {"email": "ap@acme.test"})
    down = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    assert down["status"] == "issued" and inbox.envelopes == []
    with get_database().transaction() as connection:
        job = connection.execute(
            text("SELECT status, attempts FROM jobs WHERE dedupe_key = :key"),
            {"key": f"email-{down['id']}"},
        ).one()
    assert (job.status, job.attempts) == ("pending", 1)  # tried once, waits for its retry
    controller.start()
    august = client.draft(subscription_id, start=JULY, end=AUGUST)
    up = client.call("POST", f"/v1/invoices/{august['id']}/issue")
    (envelope,) = inbox.envelopes  # sent when the response came back, no drain needed
    assert envelope.rcpt_tos == ["ap@acme.test"] and up["number"].encode() in envelope.content


def test_the_invoice_as_html(billing):
    client, subscription_id = billing
    issued = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    response = client.invoice.get(f"/v1/invoices/{issued['id']}.html", headers=client.headers)
    assert response.status_code == 200 and response.content_type == "text/html; charset=utf-8"
    page = response.get_data(as_text=True)
    assert f"Invoice {issued['number']}" in page and "13.00 USD" in page
    assert "Per unit · metric api_calls, meter version 1" in page
    assert (
        client.invoice.get(f"/v1/invoices/{issued['id']}", headers=client.headers).get_json()
        == issued
    )
