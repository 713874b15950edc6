"""The `invoice` function: drafts, issues and voids invoices; runs the billing cycle."""

from __future__ import annotations

import logging

import flask
import functions_framework

from core.adapters.queue import JobHandler
from core.domain import errors, event_types
from core.services import jobs
from core.services.cloudevents import ReceivedEvent
from functions.http import FunctionApp

APP = FunctionApp("invoice")
ISSUE = "issue #7, invoicing and charging"
QUEUE = "invoice"
JOB_HANDLERS: dict[str, JobHandler] = {}

log = logging.getLogger(__name__)

for rule, methods in (
    ("/v1/invoices", ["GET", "POST"]),
    ("/v1/invoices/bulk", ["POST"]),
    ("/v1/invoices/runs/<run_id>", ["GET"]),
    ("/v1/invoices/<invoice_id>", ["GET"]),
    ("/v1/invoices/<invoice_id>/issue", ["POST"]),
    ("/v1/invoices/<invoice_id>/void", ["POST"]),
    ("/v1/invoices/<invoice_id>/charge", ["POST"]),
    ("/v1/invoices/<invoice_id>/mark-paid", ["POST"]),
    ("/v1/invoices/<invoice_id>/explain", ["GET"]),
    ("/v1/adjustments", ["GET", "POST"]),
):
    APP.not_implemented(rule, methods, ISSUE)


@APP.on_event(
    event_types.CALCULATION_COMPLETED, event_types.PAYMENT_SUCCEEDED, event_types.PAYMENT_FAILED
)
def on_pipeline_event(event: ReceivedEvent) -> None:
    raise errors.NotImplementedYet(f"{event.type} is not handled yet ({ISSUE})")


@APP.on_event(event_types.BILLING_TICK, event_types.KNATIVE_PING)
def on_tick(event: ReceivedEvent) -> None:
    """Drain due invoicing work (the billing cycle adds its jobs in issue #7)."""
    result = jobs.drain(QUEUE, JOB_HANDLERS)
    log.info(
        "billing tick", extra={"claimed": result.claimed, "done": result.done, "dead": result.dead}
    )


@functions_framework.http
def invoice(request: flask.Request) -> flask.Response:
    return APP(request)
