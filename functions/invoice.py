"""The `invoice` function: drafts, issues and voids invoices; runs the billing cycle."""

from __future__ import annotations

import logging

import flask
import functions_framework

from core.adapters.queue import JobHandler
from core.config import settings
from core.domain import errors, event_types
from core.domain.invoices import BulkRun, MarkPaid, NewAdjustment, NewInvoice, VoidInvoice
from core.domain.invoices.status import STATUSES, InvoiceStatus
from core.domain.responses.common import Page
from core.domain.responses.invoices import (
    Adjustment,
    Invoice,
    InvoiceExplanation,
    InvoiceRun,
    InvoiceRunStarted,
)
from core.domain.responses.payments import ChargeQueued
from core.services import charging, invoice_documents, invoicing, jobs
from core.services.cloudevents import ReceivedEvent
from core.services.invoicing import adjustments, cycles, lifecycle, views
from core.services.requests import after_commit as requests_after_commit
from functions import parameters
from functions.declarations import PAGE, body_id, choice
from functions.http import FunctionApp, Reply, Request, list_reply, validate

APP = FunctionApp("invoice", writes_at_central=True)
QUEUE = "invoice"
JOB_HANDLERS: dict[str, JobHandler] = {
    invoicing.EMAIL_JOB: invoice_documents.send_email,
    invoicing.LATE_USAGE_JOB: adjustments.late_usage_job,
}

log = logging.getLogger(__name__)


@APP.route(
    "/v1/invoices/bulk",
    ["POST"],
    body=BulkRun,
    status=202,
    response=InvoiceRunStarted,
    links=[body_id("run_id", "invoice.run_status")],
)
def bulk_run(request: Request) -> Reply:
    """Invoice every subscription whose period ends at period_end, through the CloudEvents
    pipeline; answers at once with the run (follow it at /v1/invoices/runs/{id})."""
    body = validate(BulkRun, request.json())
    run = cycles.start_run(
        request.require_caller(), body.period_end, issue_them=body.issue, charge_them=body.charge
    )
    return Reply(run, status=202)


@APP.route("/v1/invoices/runs/<run_id>", response=InvoiceRun)
def run_status(request: Request) -> Reply:
    return Reply(cycles.run_status(request.params["run_id"]))


@APP.route(
    "/v1/invoices/<invoice:invoice_id>/charge",
    ["POST"],
    status=202,
    response=ChargeQueued,
    errors=[409],
    links=[body_id("invoice_id", "charge.list_payments", "/invoice_id")],
)
def charge_invoice(request: Request) -> Reply:
    """Queue a payment attempt through the customer's provider; it runs once this request
    has committed, before the answer (and from the queue on every billing tick until it
    settles: a provider outage only delays it)."""
    queued = charging.request_charge(request.require_caller(), request.params["invoice_id"])
    requests_after_commit(_run_due_attempts)
    return Reply(queued, status=202)


def _run_due_attempts() -> None:
    try:
        jobs.drain(charging.CHARGE_QUEUE, {charging.ATTEMPT_JOB: charging.run_attempt})
    except Exception:  # the queue keeps the attempt; a request must not fail for this
        log.exception("running payment attempts failed; the billing tick retries")


@APP.route(
    "/v1/invoices/<invoice:invoice_id>/mark-paid",
    ["POST"],
    body=MarkPaid,
    response=Invoice,
    errors=[409],
)
def mark_paid(request: Request) -> Reply:
    body = validate(MarkPaid, request.json())
    charging.mark_paid(request.require_caller(), request.params["invoice_id"], body.reference)
    return Reply(views.get_invoice(request.params["invoice_id"]))


@APP.route(
    "/v1/invoices",
    ["POST"],
    body=NewInvoice,
    status=201,
    also=[200],
    response=Invoice,
    errors=[404, 409],
    links=[
        body_id("invoice_id", f"invoice.{name}")
        for name in (
            "get_invoice",
            "invoice_html",
            "invoice_pdf",
            "issue_invoice",
            "refresh_invoice",
            "void_invoice",
            "explain_invoice",
            "charge_invoice",
            "mark_paid",
        )
    ],
)
def create_invoice(request: Request) -> Reply:
    """The period's draft: 201 when created, 200 with the period's live invoice otherwise.
    When the period's invoices are all void, the new draft is their replacement
    (`replaces`)."""
    body = validate(NewInvoice, request.json())
    invoice, created = lifecycle.create_draft(
        request.require_caller(), body.subscription_id, body.period_start, body.period_end
    )
    return Reply(invoice, status=201 if created else 200)


@APP.route(
    "/v1/invoices",
    response=Page[Invoice],
    query=[parameters.customer_id(), choice("status", STATUSES), *PAGE],
)
def list_invoices(request: Request) -> Reply:
    return list_reply(
        *views.list_invoices(
            customer_id=request.query("customer_id"),
            status=request.one_of("status", STATUSES),
            cursor=request.query("cursor"),
            limit=request.limit(),
        )
    )


@APP.route("/v1/invoices/<invoice:invoice_id>", response=Invoice)
def get_invoice(request: Request) -> Reply:
    return Reply(views.get_invoice(request.params["invoice_id"]))


@APP.route("/v1/invoices/<invoice:invoice_id>.html")
def invoice_html(request: Request) -> Reply:
    html, _ = invoice_documents.render(request.params["invoice_id"])
    return Reply(html, content_type="text/html; charset=utf-8")


@APP.route("/v1/invoices/<invoice:invoice_id>.pdf", errors=[409])
def invoice_pdf(request: Request) -> Reply:
    """The issued invoice as a PDF (A4); a draft has none: 409 invoice_not_issued."""
    pdf = invoice_documents.pdf(request.params["invoice_id"])
    return Reply(
        pdf.content,
        content_type=invoice_documents.PDF_CONTENT_TYPE,
        headers={"Content-Disposition": f'inline; filename="{pdf.filename}"'},
    )


@APP.route("/v1/invoices/<invoice:invoice_id>/issue", ["POST"], response=Invoice, errors=[409])
def issue_invoice(request: Request) -> Reply:
    """Number the invoice and make it final; with SMTP configured, its email job runs
    right after the commit (and on every billing tick until it succeeds)."""
    issued = lifecycle.issue(request.require_caller(), request.params["invoice_id"])
    email_after_commit(issued["id"])
    return Reply(issued)


@APP.route("/v1/invoices/<invoice:invoice_id>/refresh", ["POST"], response=Invoice, errors=[409])
def refresh_invoice(request: Request) -> Reply:
    """Re-price a draft from the current exact usage and pending adjustments (without a
    scan when nothing it was priced from changed); 409 for an invoice that is not a draft."""
    return Reply(lifecycle.refresh(request.require_caller(), request.params["invoice_id"]))


def email_after_commit(invoice_id: str) -> None:
    """With SMTP configured, send the issued invoice's email once this request or event
    has committed, in this thread (smtplib's timeout bounds the wait). A failure leaves
    the job to its backoff: the billing tick sends it; the issue stands either way."""
    if not settings().smtp_url:
        return

    def send() -> None:
        try:
            outcome = jobs.run_now(QUEUE, JOB_HANDLERS, invoicing.email_job_key(invoice_id))
        except Exception:  # the job stays queued; a response must not fail for this
            log.exception("sending the invoice email failed", extra={"invoice_id": invoice_id})
            return
        log.info("invoice email", extra={"invoice_id": invoice_id, "outcome": outcome})

    requests_after_commit(send)


@APP.route(
    "/v1/invoices/<invoice:invoice_id>/void",
    ["POST"],
    body=VoidInvoice,
    response=Invoice,
    errors=[409],
)
def void_invoice(request: Request) -> Reply:
    body = validate(VoidInvoice, request.json())
    return Reply(
        lifecycle.void(request.require_caller(), request.params["invoice_id"], body.reason)
    )


@APP.route("/v1/invoices/<invoice:invoice_id>/explain", response=InvoiceExplanation)
def explain_invoice(request: Request) -> Reply:
    return Reply(views.explain(request.params["invoice_id"]))


@APP.route(
    "/v1/adjustments",
    ["POST"],
    body=NewAdjustment,
    status=201,
    response=Adjustment,
    links=[body_id("customer_id", "invoice.list_adjustments", "/customer_id")],
)
def create_adjustment(request: Request) -> Reply:
    body = validate(NewAdjustment, request.json())
    return Reply(adjustments.record_adjustment(request.require_caller(), body), status=201)


@APP.route(
    "/v1/adjustments",
    response=Page[Adjustment],
    query=[parameters.customer_id("the customer whose adjustments", required=True), *PAGE],
)
def list_adjustments(request: Request) -> Reply:
    return list_reply(
        *views.list_adjustments(
            customer_id=request.required("customer_id"),
            cursor=request.query("cursor"),
            limit=request.limit(),
        )
    )


@APP.on_event(event_types.CALCULATION_COMPLETED, dedupe=False)
def on_calculation_completed(event: ReceivedEvent) -> None:
    """Draft (and with ABAXUS_AUTO_ISSUE issue) the period's invoice. Runs on every
    delivery: the invoice is unique per period, issuing is idempotent, and invoice.issued
    is announced again with the same id, so a redelivery changes nothing."""
    data = event.data
    if not (isinstance(data, dict) and {"subscription_id", "period"} <= data.keys()):
        raise errors.UnprocessableEvent(
            "calculation.completed data needs subscription_id and period",
            code="invalid_calculation_event",
        )
    try:
        invoice = cycles.on_calculation_completed(data)
    except errors.Conflict as error:
        if error.code == "region_incomplete":  # ABAXUS_REGION_POLICY=wait (API.md §10)
            log.info(
                "invoice waits for regions; the billing tick asks again",
                extra={"subscription_id": data["subscription_id"], "detail": error.detail},
            )
            return
        raise errors.UnprocessableEvent(error.detail, code=error.code) from error
    except (errors.NotFound, errors.ValidationFailed) as error:
        raise errors.UnprocessableEvent(error.detail, code=error.code) from error
    if invoice["status"] == InvoiceStatus.ISSUED:
        email_after_commit(invoice["id"])
    log.info(
        "invoice from calculation", extra={"invoice_id": invoice["id"], "status": invoice["status"]}
    )


@APP.on_event(event_types.PAYMENT_SUCCEEDED, event_types.PAYMENT_FAILED)
def on_payment_event(event: ReceivedEvent) -> None:
    """The charge already moved the invoice's status in its own commit; this records that
    the invoicing side saw the outcome (a hook for receipts and dunning emails)."""
    data = event.data if isinstance(event.data, dict) else {}
    log.info("payment outcome", extra={"ce_type": event.type, "invoice_id": data.get("invoice_id")})


@APP.on_event(event_types.BILLING_TICK, event_types.KNATIVE_PING, dedupe=False)
def on_tick(event: ReceivedEvent) -> None:
    """The billing cycle: request an invoice for every period that ended more than the
    grace ago and has none, re-price drafts whose inputs changed, bill adjustments no
    subscription invoice will carry; then drain due invoicing work. Idempotent, so every
    delivery runs; each step commits on its own (a tick never holds locks for long)."""
    requested = cycles.request_due_invoices()
    refreshed = cycles.refresh_drafts()
    standalone = cycles.invoice_stranded_adjustments()
    for invoice in standalone:
        if invoice["status"] == InvoiceStatus.ISSUED:
            email_after_commit(invoice["id"])
    result = jobs.drain(QUEUE, JOB_HANDLERS)
    log.info(
        "billing tick",
        extra={
            "invoices_requested": requested,
            "drafts_refreshed": refreshed,
            "adjustments_invoices": len(standalone),
            "claimed": result.claimed,
            "done": result.done,
            "dead": result.dead,
        },
    )


@functions_framework.http
def invoice(request: flask.Request) -> flask.Response:
    return APP(request)
