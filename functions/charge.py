"""The `charge` function: payment attempts through the customer's provider; webhooks."""

from __future__ import annotations

import logging

import flask
import functions_framework
import stripe

from core.config import settings
from core.domain import errors, event_types
from core.domain.responses.common import Page
from core.domain.responses.payments import Payment, WebhookReceived
from core.services import charging, jobs
from core.services.caller import SYSTEM
from core.services.cloudevents import ReceivedEvent
from core.services.requests import after_commit as requests_after_commit
from functions import parameters
from functions.declarations import PAGE, body_id, choice, header, text
from functions.http import FunctionApp, Reply, Request, list_reply

APP = FunctionApp("charge", writes_at_central=True)
STRIPE_EVENT = {"type": "object", "description": "a Stripe event, as Stripe signed it"}
STRIPE_SIGNATURE = header(
    "Stripe-Signature", "Stripe's signature of the body (STRIPE_WEBHOOK_SECRET)", required=True
)
HANDLERS = {charging.ATTEMPT_JOB: charging.run_attempt}

log = logging.getLogger(__name__)


@APP.route(
    "/v1/payments",
    response=Page[Payment],
    links=[body_id("payment_id", "charge.get_payment", "/data/0/id")],
    query=[
        parameters.customer_id(),
        text("invoice_id", max_length=128),
        choice("status", charging.PAYMENT_STATUSES),
        *PAGE,
    ],
)
def list_payments(request: Request) -> Reply:
    """Payment attempts: `customer_id`, `invoice_id` and `status` filter."""
    return list_reply(
        *charging.list_payments(
            customer_id=request.query("customer_id"),
            invoice_id=request.query("invoice_id"),
            status=request.one_of("status", charging.PAYMENT_STATUSES),
            cursor=request.query("cursor"),
            limit=request.limit(),
        )
    )


@APP.route("/v1/payments/<payment_id>", response=Payment)
def get_payment(request: Request) -> Reply:
    return Reply(charging.get_payment(request.params["payment_id"]))


# Webhooks authenticate by the provider's signature, not by an API key (scope None).
@APP.route(
    "/v1/webhooks/stripe",
    ["POST"],
    scope=None,
    body=STRIPE_EVENT,
    response=WebhookReceived,
    errors=[401],
    headers=[STRIPE_SIGNATURE],
)
def stripe_webhook(request: Request) -> Reply:
    secret = settings().stripe_webhook_secret
    if not secret:
        raise errors.Unavailable("STRIPE_WEBHOOK_SECRET is not configured", code="webhooks_off")
    try:
        event = stripe.Webhook.construct_event(  # type: ignore[no-untyped-call]
            request.body, request.raw.headers.get("Stripe-Signature", ""), secret
        )
    except stripe.SignatureVerificationError as error:
        raise errors.Unauthenticated(
            "the Stripe signature does not verify", code="invalid_signature"
        ) from error
    except ValueError as error:
        raise errors.MalformedRequest("the webhook body is not a Stripe event") from error
    return Reply({"received": True, "outcome": charging.stripe_event(event)})


@APP.on_event(event_types.INVOICE_ISSUED, dedupe=False)
def on_invoice_issued(event: ReceivedEvent) -> None:
    """Charge a newly issued invoice (an attempt already queued is not queued again, so a
    redelivery charges nothing twice), then run due attempts."""
    data = event.data if isinstance(event.data, dict) else {}
    invoice_id = data.get("invoice_id")
    if data.get("charge") is False:  # a bulk run that issues without charging
        log.info("invoice issued without charging", extra={"invoice_id": invoice_id})
        return
    if not isinstance(invoice_id, str):
        raise errors.UnprocessableEvent(
            "invoice.issued data needs invoice_id", code="invalid_invoice_event"
        )
    try:
        charging.request_charge(SYSTEM, invoice_id)
        requests_after_commit(_run_due_attempts)
    except errors.Conflict:
        log.info("invoice not chargeable (already settled)", extra={"invoice_id": invoice_id})
    except errors.NotFound as error:
        raise errors.UnprocessableEvent(error.detail, code=error.code) from error


def _run_due_attempts() -> None:
    jobs.drain(charging.CHARGE_QUEUE, HANDLERS)


@APP.on_event(event_types.BILLING_TICK, event_types.KNATIVE_PING)
def on_tick(event: ReceivedEvent) -> None:
    """Run due payment attempts (dunning retries come due here)."""
    result = jobs.drain(charging.CHARGE_QUEUE, HANDLERS)
    log.info("charge tick", extra={"claimed": result.claimed, "done": result.done})


@functions_framework.http
def charge(request: flask.Request) -> flask.Response:
    return APP(request)
