"""The `calculate` function: prices a subscription's usage into checksummed line items."""

from __future__ import annotations

import logging

import flask
import functions_framework
from pydantic import ValidationError

from core.domain import errors, event_types
from core.domain.pricing.calculation import CalculateRequest
from core.domain.responses.common import Page
from core.domain.responses.pricing import Calculation, LineEvent
from core.services import notify, pricing
from core.services.cloudevents import ReceivedEvent
from functions.declarations import PAGE, Link, body_id
from functions.http import FunctionApp, Reply, Request, list_reply, validate

APP = FunctionApp("calculate", writes_at_central=True)

log = logging.getLogger(__name__)


@APP.route(
    "/v1/pricing/calculate",
    ["POST"],
    scope="read",
    body=CalculateRequest,
    response=Calculation,
    errors=[404],
    links=[
        body_id("calculation_id", "calculate.get_calculation"),
        Link(
            "calculate.line_events",
            {"calculation_id": "$response.body#/id", "line": "$response.body#/lines/0/line"},
            description="the events behind the first line",
        ),
    ],
)
def calculate_route(request: Request) -> Reply:
    """Exact usage priced under the subscription's plan version; the same subscription,
    period and events give the same stored calculation (id and checksum). A preview and
    an invoice are the same computation, so `read` keys may ask for it."""
    body = validate(CalculateRequest, request.json())
    return Reply(
        pricing.calculate(
            body.subscription_id, period_start=body.period_start, period_end=body.period_end
        )
    )


@APP.route("/v1/pricing/calculations/<calculation_id>", response=Calculation)
def get_calculation(request: Request) -> Reply:
    return Reply(pricing.get_calculation(request.params["calculation_id"]))


@APP.route(
    "/v1/pricing/calculations/<calculation_id>/lines/<int:line>/events",
    response=Page[LineEvent],
    query=PAGE,
)
def line_events(request: Request) -> Reply:
    """The raw events behind a line, each with its meter version, in canonical order."""
    return list_reply(
        *pricing.line_events(
            request.params["calculation_id"],
            int(request.params["line"]),
            cursor=request.query("cursor"),
            limit=request.limit(),
        )
    )


@APP.on_event(event_types.INVOICE_REQUESTED, dedupe=False)
def on_invoice_requested(event: ReceivedEvent) -> None:
    """Calculate (idempotently) and announce the calculation; a redelivery finds the
    stored calculation and announces the same id again (same CloudEvent id)."""
    data = event.data if isinstance(event.data, dict) else {}
    run = {k: data[k] for k in ("run_id", "issue", "charge") if k in data}
    try:
        body = CalculateRequest.model_validate(
            {k: v for k, v in data.items() if k not in run} if data else event.data
        )
    except ValidationError as error:
        raise errors.UnprocessableEvent(
            f"invoice.requested data: {error.errors()[0]['msg']}", code="invalid_invoice_request"
        ) from error
    try:
        calculation = pricing.calculate(
            body.subscription_id, period_start=body.period_start, period_end=body.period_end
        )
    except (errors.NotFound, errors.ValidationFailed) as error:
        raise errors.UnprocessableEvent(error.detail, code=error.code) from error
    notify.emit_after_commit(
        event_types.CALCULATION_COMPLETED,
        {
            "calculation_id": calculation["id"],
            "subscription_id": calculation["subscription_id"],
            "period": calculation["period"],
            "total": calculation["total"],
            "currency": calculation["currency"],
            **run,
        },
        event_id=f"calculation-{calculation['id']}" + (f"-{run['run_id']}" if run else ""),
    )
    log.info("calculation completed", extra={"calculation_id": calculation["id"]})


@functions_framework.http
def calculate(request: flask.Request) -> flask.Response:
    return APP(request)
