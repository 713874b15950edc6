"""The `ingest` function: usage events in over HTTP and as CloudEvents."""

from __future__ import annotations

import flask
import functions_framework

from core.domain import errors, event_types
from core.services.cloudevents import ReceivedEvent
from functions.http import FunctionApp

APP = FunctionApp("ingest")
ISSUE = "issue #4, event ingestion"

APP.not_implemented("/v1/events", ["GET", "POST"], ISSUE)
APP.not_implemented("/v1/events/batch", ["POST"], ISSUE)


@APP.on_event(event_types.USAGE_REPORTED)
def on_usage_reported(event: ReceivedEvent) -> None:
    # 501 is retried by the broker and then dead-lettered: the event is kept, not lost.
    raise errors.NotImplementedYet(f"{event.type} ingestion is not implemented yet ({ISSUE})")


@functions_framework.http
def ingest(request: flask.Request) -> flask.Response:
    return APP(request)
