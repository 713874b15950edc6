"""The `charge` function: payment attempts through the customer's provider; webhooks."""

from __future__ import annotations

import flask
import functions_framework

from core.domain import errors, event_types
from core.services.cloudevents import ReceivedEvent
from functions.http import FunctionApp, Reply, Request

APP = FunctionApp("charge")
ISSUE = "issue #7, invoicing and charging"

APP.not_implemented("/v1/payments", ["GET"], ISSUE)
APP.not_implemented("/v1/payments/<payment_id>", ["GET"], ISSUE)


# Webhooks authenticate by the provider's signature, not by an API key (scope None).
@APP.route("/v1/webhooks/stripe", ["POST"], scope=None)
def stripe_webhook(request: Request) -> Reply:
    raise errors.NotImplementedYet(f"Stripe webhooks are not implemented yet ({ISSUE})")


@APP.on_event(event_types.INVOICE_ISSUED)
def on_invoice_issued(event: ReceivedEvent) -> None:
    raise errors.NotImplementedYet(f"{event.type} is not handled yet ({ISSUE})")


@functions_framework.http
def charge(request: flask.Request) -> flask.Response:
    return APP(request)
