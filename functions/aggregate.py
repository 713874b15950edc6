"""The `aggregate` function: folds ingested events into rollups; answers usage queries."""

from __future__ import annotations

import logging

import flask
import functions_framework

from core.domain import errors, event_types
from core.domain.responses.usage import UsageParity, UsageSummaries, UsageSummary
from core.services import aggregation, retention, stats, usage
from core.services import ingest as ingestion
from core.services.cloudevents import ReceivedEvent
from functions import parameters
from functions.declarations import choice, instant
from functions.http import FunctionApp, Reply, Request

APP = FunctionApp("aggregate")

WINDOW = (
    instant("from", "the window's start (inclusive)", required=True),
    instant("to", "the window's end (exclusive); at most 400 days after `from`", required=True),
)

log = logging.getLogger(__name__)


@APP.route(
    "/v1/usage/summary",
    response=UsageSummary | UsageSummaries,
    query=[
        parameters.customer_id(required=True),
        parameters.metric_key("one metric (its summary); without it, every metric's (`data`)"),
        *WINDOW,
        choice(
            "mode", usage.MODES, "realtime: from the rollups; exact: a scan", default="realtime"
        ),
    ],
)
def usage_summary(request: Request) -> Reply:
    """Usage of a customer in [from, to): `mode=realtime` (default) from the rollups with
    the fold watermark as `as_of`; `mode=exact` scans the raw events and carries a checksum
    of exactly the events it counted. Without `metric_key`, every metric the customer has
    usage for (as `data`)."""
    mode = request.query("mode") or "realtime"
    if mode not in usage.MODES:
        raise errors.ValidationFailed(
            "mode is realtime or exact",
            errors=[errors.FieldError(("query", "mode"), "realtime or exact")],
        )
    customer_id = request.required("customer_id")
    start, end = request.required_instant("from"), request.required_instant("to")
    metric_key = request.query("metric_key")
    if metric_key:
        return Reply(
            usage.summary(
                mode=mode, customer_id=customer_id, metric_key=metric_key, start=start, end=end
            )
        )
    return Reply(
        {"data": usage.summaries(mode=mode, customer_id=customer_id, start=start, end=end)}
    )


@APP.route(
    "/v1/usage/parity",
    response=UsageParity,
    query=[parameters.customer_id(required=True), *WINDOW],
)
def usage_parity(request: Request) -> Reply:
    """Real-time against exact, per metric of the customer, read in one snapshot."""
    customer_id = request.required("customer_id")
    start, end = request.required_instant("from"), request.required_instant("to")
    return Reply(usage.parity(customer_id=customer_id, start=start, end=end))


@APP.on_event(event_types.EVENTS_INGESTED)
def on_events_ingested(event: ReceivedEvent) -> None:
    """New events were stored: fold every due ingestion job (not only the one named:
    whichever replica claims a job folds it, exactly once)."""
    result = aggregation.drain()
    log.info("events ingested", extra={"claimed": result.claimed, "done": result.done})


@APP.on_event(event_types.AGGREGATE_TICK, event_types.KNATIVE_PING, dedupe=False)
def on_tick(event: ReceivedEvent) -> None:
    """Create the coming months' event partitions, fold whatever is due (a lost
    notification leaves work only here), check real-time against exact, and prune the
    operational tables past their retention. Idempotent, so every delivery runs it; each
    step commits on its own."""
    ingestion.ensure_partitions_ahead()
    result = aggregation.drain()
    check = usage.reconcile()
    pruned = retention.prune()
    stats.compact()
    log.info(
        "aggregate tick",
        extra={
            "claimed": result.claimed,
            "done": result.done,
            "dead": result.dead,
            "parity_checked": check.checked,
            "pruned": pruned,
            "parity_customers": check.customers,
        },
    )


@functions_framework.http
def aggregate(request: flask.Request) -> flask.Response:
    return APP(request)
