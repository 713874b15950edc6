"""The `ingest` function: usage events in over HTTP and as CloudEvents from in-cluster
services. A key with scope `events:write` can ingest and nothing else."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Annotated, Any

import flask
import functions_framework.aio
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse

from core import auth
from core.config import settings
from core.domain import errors, event_types
from core.domain.corrections import RetractEvent
from core.domain.events import BATCH_BODY_SCHEMA, BATCH_EVENTS_MAX, EVENT_SCHEMA
from core.domain.fields import MetricKey
from core.domain.responses.common import Page
from core.domain.responses.ingest import BATCH_RESULT_SCHEMA, EVENT_ACCEPTED_SCHEMA
from core.domain.responses.invoices import CorrectionSettled
from core.domain.responses.usage import QuarantinedEvent, QuarantineRelease, StoredEvent
from core.observability import http_requests
from core.services import corrections, quarantine
from core.services import ingest as ingestion
from core.services.cloudevents import ReceivedEvent
from functions import asgi, parameters
from functions.declarations import PAGE, choice, instant
from functions.framework import PROBLEM_CONTENT_TYPE, problem_body
from functions.http import (
    INTERNAL_ERROR_DETAIL,
    JSON_CONTENT_TYPE,
    FunctionApp,
    Reply,
    Request,
    bearer_of,
    is_json,
    list_reply,
    parse_json,
    render,
    request_id_of,
    to_json,
    validate,
)

APP = FunctionApp("ingest")
log = logging.getLogger(__name__)


@APP.route(
    "/v1/events",
    ["POST"],
    scope=auth.SCOPE_EVENTS_WRITE,
    body=EVENT_SCHEMA,
    status=202,
    # Written by hand on the hot path (`single_event_reply`), so described by hand too.
    response=EVENT_ACCEPTED_SCHEMA,
    errors=[409, 421],
)
def post_event(request: Request) -> Reply:
    """With an Idempotency-Key header, the event commits with the header's idempotency
    record, in the request's transaction. Without one, the event loop answers (`ingest`
    below: concurrent single events are grouped into one transaction); it hands a request
    here only when its body or key cannot be read, and this route then answers that error
    (401 before a malformed body) without writing anything."""
    return single_event_reply(
        ingestion.ingest_single(request.json(), producer=request.require_caller().name)
    )


def single_event_reply(outcome: ingestion.Outcome) -> Reply:
    """A single event's answer: 202 accepted or duplicate, or the error of a conflict or an
    invalid event."""
    if outcome.outcome == "conflict":
        raise errors.Conflict(outcome.detail or "idempotency conflict", code="idempotency_conflict")
    if outcome.code == "producer_not_allowed":
        raise errors.Forbidden(outcome.detail or "not a producer", code="producer_not_allowed")
    if outcome.code == "wrong_region":
        raise errors.WrongRegion(outcome.detail or "another region", code="wrong_region")
    if outcome.outcome == "invalid":
        raise errors.ValidationFailed(
            outcome.detail or "invalid event",
            code=outcome.code or "validation_error",
            errors=[errors.FieldError(("body", *e.loc), e.msg, e.type) for e in outcome.errors],
        )
    return Reply(
        {"status": outcome.outcome, "idempotency_key": outcome.idempotency_key, "id": outcome.id},
        status=202,
    )


@APP.route(
    "/v1/events/batch",
    ["POST"],
    scope=auth.SCOPE_EVENTS_WRITE,
    body=BATCH_BODY_SCHEMA,
    status=207,
    response=BATCH_RESULT_SCHEMA,  # written byte for byte by `batch_response`
)
def post_batch(request: Request) -> Reply:
    events = batch_events(request.json())
    outcomes = ingestion.ingest(events, producer=request.require_caller().name)
    return Reply(batch_response(outcomes), status=207, content_type=JSON_CONTENT_TYPE)


def batch_events(body: Any) -> list[Any]:
    """The events of a batch body, refused whole when it is not one (§5)."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("events"), list)
        or set(body) != {"events"}
    ):
        raise errors.ValidationFailed(
            'a batch is {"events": [...]}',
            errors=[errors.FieldError(("body", "events"), "a list of events is required")],
        )
    events = body["events"]
    if not events:
        raise errors.ValidationFailed("a batch holds 1 to 500 events", code="empty_batch")
    if len(events) > BATCH_EVENTS_MAX:
        raise errors.PayloadTooLarge(
            f"a batch holds at most {BATCH_EVENTS_MAX} events, this one {len(events)}",
            code="batch_too_large",
        )
    return list(events)


def batch_response(outcomes: Sequence[ingestion.Outcome]) -> bytes:
    """The 207 body, byte for byte what encoding the results' dicts gives (a test holds
    it to that). Written here because 500 results are most of a batch's response work:
    an accepted or duplicate event's entry is one f-string (0.52 -> 0.25 ms for 500)."""
    entries = []
    for o in outcomes:
        key, event_id = o.idempotency_key, o.id
        if o.code is None and o.detail is None and key is not None and event_id is not None:
            entries.append(
                f'{{"index": {o.position}, "status": {ingestion.STATUS[o.outcome]}, '
                f'"outcome": "{o.outcome}", "idempotency_key": {encode_basestring(key)}, '
                f'"id": {encode_basestring(event_id)}}}'
            )
        else:
            entries.append(to_json(o.result()).decode("utf-8"))
    counts = Counter(o.outcome for o in outcomes)
    accepted, duplicates, held = counts["accepted"], counts["duplicate"], counts["quarantined"]
    rejected = len(outcomes) - accepted - duplicates - held
    return (
        f'{{"results": [{", ".join(entries)}], "accepted": {accepted}, '
        f'"duplicates": {duplicates}, "quarantined": {held}, "rejected": {rejected}}}'
    ).encode()


@APP.route(
    "/v1/events",
    response=Page[StoredEvent],
    query=[
        parameters.customer_id("events are listed per customer", required=True),
        parameters.metric_key("only this metric's"),
        instant("from", "events with a timestamp at or after it"),
        instant("to", "events with a timestamp before it"),
        choice(
            "include",
            ("superseded",),
            "superseded: also the events corrections superseded, with `superseded_by`",
        ),
        *PAGE,
    ],
)
def list_events(request: Request) -> Reply:
    customer_id = request.required("customer_id")  # events are listed per customer
    page = ingestion.list_events(
        customer_id=customer_id,
        metric_key=request.query("metric_key") or None,
        start=request.instant("from"),
        end=request.instant("to"),
        cursor=request.query("cursor"),
        limit=request.limit(),
        include_superseded=request.one_of("include", ("superseded",)) == "superseded",
    )
    return list_reply(*page)


@APP.route(
    "/v1/events/<path:idempotency_key>/retract",
    ["POST"],
    body=RetractEvent,
    response=CorrectionSettled,
    errors=[409],
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def retract_event(request: Request) -> Reply:
    """The one-event correction: an amend of that event's metric and customer that retracts
    it, applied at once (owner or admin). Its key stays consumed: a resend is a duplicate."""
    body = validate(RetractEvent, request.json())
    return Reply(
        corrections.retract_event(
            request.require_caller(), request.params["idempotency_key"], body.reason
        )
    )


@APP.route(
    "/v1/quarantine",
    response=Page[QuarantinedEvent],
    query=[
        parameters.metric_key("only this metric's"),
        parameters.customer_id("only this customer's"),
        choice("status", ("held", "released"), "held: still quarantined", default="held"),
        *PAGE,
    ],
)
def list_quarantine(request: Request) -> Reply:
    """Events held because they broke a quarantining contract, with their violations."""
    return list_reply(
        *quarantine.list_held(
            metric_key=request.query("metric_key") or None,
            customer_id=request.query("customer_id") or None,
            released=request.one_of("status", ("held", "released")) == "released",
            cursor=request.query("cursor"),
            limit=request.limit(),
        )
    )


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric_key: MetricKey
    ids: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
            Field(min_length=1, max_length=quarantine.RELEASE_EVENTS_MAX),
        ]
        | None
    ) = Field(default=None, description="these events only; absent: every held event")


@APP.route(
    "/v1/quarantine/release",
    ["POST"],
    body=ReleaseRequest,
    response=QuarantineRelease,
    errors=[404],
    # admin, or the owning team's corrections:write key (403 not_owner otherwise)
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def release_quarantine(request: Request) -> Reply:
    """Check held events against the contract in force for their timestamps now; those
    that pass are counted (as late usage where their period is invoiced)."""
    body = validate(ReleaseRequest, request.json())
    return Reply(quarantine.release(request.require_caller(), body.metric_key, body.ids))


@APP.on_event(event_types.USAGE_REPORTED)
def on_usage_reported(event: ReceivedEvent) -> None:
    """`data` is one event or a list. Without an idempotency_key, an event's key is
    `source/id` (`source/id/index` in a list): the CloudEvents spec makes (source, id)
    unique, so a redelivery is a duplicate. All or nothing: one invalid or conflicting
    event rejects the CloudEvent (422, dead-lettered), and nothing of it is stored."""
    items = event.data if isinstance(event.data, list) else [event.data]
    if not items or len(items) > BATCH_EVENTS_MAX:
        raise errors.UnprocessableEvent(
            f"data holds 1 to {BATCH_EVENTS_MAX} usage events", code="invalid_usage_event"
        )
    listed = isinstance(event.data, list)
    raw_events: list[Any] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "idempotency_key" not in item:
            key = f"{event.source}/{event.id}" + (f"/{index}" if listed else "")
            raw_events.append({**item, "idempotency_key": key})
        else:
            raw_events.append(item)
    # A contract's `producers` names the CloudEvent sources that may emit its metric.
    outcomes = ingestion.ingest(raw_events, producer=event.source)
    refused = [o for o in outcomes if o.outcome in {"invalid", "conflict"}]
    if refused:
        details = "; ".join(f"[{o.position}] {o.code}: {o.detail}" for o in refused[:10])
        raise errors.UnprocessableEvent(f"usage refused: {details}", code="invalid_usage_event")


SINGLE_EVENT_ROUTE = "/v1/events"


@functions_framework.aio.http
async def ingest(request: StarletteRequest) -> StarletteResponse:
    """An ASGI function: functions-framework serves it with uvicorn workers. A single event
    without an Idempotency-Key is answered on the event loop, its event written by the
    process's group commit thread; every other request (and a single event whose body or
    key cannot be read, so its error comes out exactly as the route renders it) is the
    same `FunctionApp` as every function's, run in a request thread. Measured: a third of
    the server's CPU per single event of the thread-per-request stack (docs/benchmarks.md)."""
    scope = request.scope
    try:
        body = await request.body()
        if _is_grouped_single_event(scope):
            answer = await _single_event(scope, body)
            if answer is not None:
                return answer
        return _response(*await asgi.run_wsgi(_serve_wsgi, scope, body))
    except Exception:  # the outermost boundary of the ASGI function: never a bare 500
        request_id = request_id_of(request.headers.get("x-request-id", ""))
        route = APP.route_label(scope["method"], asgi.route_path(scope))
        log.exception("unhandled error", extra={"route": route, "request_id": request_id})
        http_requests.labels(APP.name, route, scope["method"], "500").inc()
        return StarletteResponse(
            problem_body(500, "internal_error", INTERNAL_ERROR_DETAIL, request_id),
            status_code=500,
            media_type=PROBLEM_CONTENT_TYPE,
            headers={"X-Request-Id": request_id},
        )


def _serve_wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    return APP(flask.Request(environ))(environ, start_response)


def _is_grouped_single_event(scope: Mapping[str, Any]) -> bool:
    return (
        scope["method"] == "POST"
        and asgi.route_path(scope) == SINGLE_EVENT_ROUTE
        and all(name != b"idempotency-key" for name, _ in scope["headers"])
    )


async def _single_event(scope: Mapping[str, Any], body: bytes) -> StarletteResponse | None:
    """The grouped single event on the loop; None hands the request to `FunctionApp`
    (a body over the limit, no bearer key, no JSON: nothing was written, and those
    answers keep their order — 401 before a malformed body)."""
    started = time.perf_counter()
    headers = {name: value for name, value in scope["headers"]}
    if len(body) > settings().request_body_bytes_max or not body.strip():
        return None
    if not is_json(headers.get(b"content-type", b"").decode("latin-1")):
        return None  # the route answers 415
    bearer = bearer_of(headers.get(b"authorization", b"").decode("latin-1"))
    if bearer is None:
        return None
    try:
        raw_event = parse_json(body)
    except errors.MalformedRequest:
        return None
    request_id = request_id_of(headers.get(b"x-request-id", b"").decode("latin-1"))
    failure: Exception | None = None
    outcome: ingestion.Outcome | None = None
    try:
        outcome = await ingestion.ingest_single_async(raw_event, api_key=bearer)
    except Exception as error:  # rendered below, as the route would
        failure = error

    def dispatch() -> tuple[str, flask.Response]:
        try:
            if failure is not None:
                raise failure
            assert outcome is not None
            return SINGLE_EVENT_ROUTE, render(single_event_reply(outcome))
        except errors.AbaxusError as error:
            return SINGLE_EVENT_ROUTE, APP.problem(error, request_id)

    response = APP.answer("POST", request_id, started, dispatch, route=SINGLE_EVENT_ROUTE)
    body = response.get_data()
    return _response(
        response.status_code, asgi.raw_headers(response.headers.to_wsgi_list(), body), body
    )


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> StarletteResponse:
    response = StarletteResponse(body, status_code=status)
    response.raw_headers = headers
    return response
