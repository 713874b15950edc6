"""The `calculate` function: prices a subscription's usage into checksummed line items."""

from __future__ import annotations

import flask
import functions_framework

from core.domain import errors, event_types
from core.services.cloudevents import ReceivedEvent
from functions.http import FunctionApp

APP = FunctionApp("calculate")
ISSUE = "issue #6, pricing engine"

APP.not_implemented("/v1/pricing/calculate", ["POST"], ISSUE)
APP.not_implemented("/v1/pricing/calculations/<calculation_id>", ["GET"], ISSUE)
APP.not_implemented(
    "/v1/pricing/calculations/<calculation_id>/lines/<int:line>/events", ["GET"], ISSUE
)


@APP.on_event(event_types.INVOICE_REQUESTED)
def on_invoice_requested(event: ReceivedEvent) -> None:
    raise errors.NotImplementedYet(f"{event.type} is not handled yet ({ISSUE})")


@functions_framework.http
def calculate(request: flask.Request) -> flask.Response:
    return APP(request)
