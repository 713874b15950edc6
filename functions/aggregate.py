"""The `aggregate` function: folds ingested events into rollups; answers usage queries."""

from __future__ import annotations

import logging

import flask
import functions_framework

from core.adapters.queue import JobHandler
from core.domain import event_types
from core.services import ingest as ingestion
from core.services import jobs
from core.services.cloudevents import ReceivedEvent
from functions.http import FunctionApp

APP = FunctionApp("aggregate")
ISSUE = "issue #5, metering and aggregation"
QUEUE = "aggregate"
# Job kinds of the aggregate queue and their handlers (the aggregation issue adds them).
JOB_HANDLERS: dict[str, JobHandler] = {}

log = logging.getLogger(__name__)

APP.not_implemented("/v1/usage/summary", ["GET"], ISSUE)
APP.not_implemented("/v1/usage/parity", ["GET"], ISSUE)


@APP.on_event(event_types.EVENTS_INGESTED)
def on_events_ingested(event: ReceivedEvent) -> None:
    """New events were stored: fold what is due (only the kinds this version can fold;
    other jobs wait, pending, for a version that can)."""
    result = jobs.drain(QUEUE, JOB_HANDLERS)
    log.info("events ingested", extra={"claimed": result.claimed, "done": result.done})


@APP.on_event(event_types.AGGREGATE_TICK, event_types.KNATIVE_PING)
def on_tick(event: ReceivedEvent) -> None:
    """Create the coming months' event partitions and drain whatever ingestion work is
    due (a lost notification leaves work only here)."""
    ingestion.ensure_partitions_ahead()
    result = jobs.drain(QUEUE, JOB_HANDLERS)
    log.info(
        "aggregate tick",
        extra={"claimed": result.claimed, "done": result.done, "dead": result.dead},
    )


@functions_framework.http
def aggregate(request: flask.Request) -> flask.Response:
    return APP(request)
