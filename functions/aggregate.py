"""The `aggregate` function: folds ingested events into rollups; answers usage queries."""

from __future__ import annotations

import logging

import flask
import functions_framework

from core.adapters.queue import JobHandler
from core.domain import errors, event_types
from core.services import ingest as ingestion
from core.services import jobs, usage
from core.services.cloudevents import ReceivedEvent
from functions.http import FunctionApp, Reply, Request

APP = FunctionApp("aggregate")
ISSUE = "issue #5, metering and aggregation"
QUEUE = "aggregate"
# Job kinds of the aggregate queue and their handlers (the aggregation issue adds them).
JOB_HANDLERS: dict[str, JobHandler] = {}

log = logging.getLogger(__name__)


@APP.route("/v1/usage/summary")
def usage_summary(request: Request) -> Reply:
    """Usage of a customer in [from, to): `mode=exact` scans the raw events and carries a
    checksum of exactly the events it counted; without `metric_key`, every metric the
    customer has events for (as `data`)."""
    mode = request.query("mode") or "realtime"
    if mode not in {"realtime", "exact"}:
        raise errors.ValidationFailed(
            "mode is realtime or exact",
            errors=[errors.FieldError(("query", "mode"), "realtime or exact")],
        )
    if mode == "realtime":
        raise errors.NotImplementedYet(
            f"real-time summaries come with the rollups ({ISSUE}); use mode=exact"
        )
    customer_id = request.required("customer_id")
    start, end = request.required_instant("from"), request.required_instant("to")
    metric_key = request.query("metric_key")
    if metric_key:
        return Reply(
            usage.exact_summary(
                customer_id=customer_id, metric_key=metric_key, start=start, end=end
            )
        )
    keys = usage.metrics_with_usage(customer_id=customer_id, start=start, end=end)
    return Reply(
        {
            "data": [
                usage.exact_summary(customer_id=customer_id, metric_key=key, start=start, end=end)
                for key in keys
            ]
        }
    )


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
