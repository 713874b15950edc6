"""HTTP plumbing every function shares: routing, auth, problem+json, Idempotency-Key,
request ids, health, metrics, and CloudEvents on `POST /`.

A function module builds one `FunctionApp`, declares its routes and event handlers, and
exposes it as a functions-framework HTTP target: `def api(request): return APP(request)`.
Handlers stay thin: parse, call one service, return a `Reply`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

import flask
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import from_http
from pydantic import BaseModel
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import BaseConverter, Map, Rule

from core import auth
from core.config import settings
from core.domain import delivery, errors
from core.domain.canonical import compiled, json_default
from core.domain.events import RFC3339
from core.domain.instants import InstantError, to_utc
from core.domain.pagination import parse_limit
from core.domain.validation import Model, validated
from core.logging import log_context
from core.observability import (
    METRICS_CONTENT_TYPE,
    cloudevents_received,
    http_request_duration,
    http_requests,
    render_metrics,
)
from core.services import (
    api_keys,
    cloudevents,
    dead_letters,
    health,
    idempotency,
    requests,
    stats,
)
from core.services.caller import Caller
from functions.declarations import Answer, Link, QueryParameter

log = logging.getLogger("abaxus.http")

PROBLEM_CONTENT_TYPE = "application/problem+json"
JSON_CONTENT_TYPE = "application/json"
CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
INTERNAL_ERROR_DETAIL = "an unexpected error occurred; the request id identifies it in the logs"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
DEFAULT_SCOPE = object()

# The one table from domain errors to HTTP statuses (most specific class first wins).
STATUS_BY_ERROR: dict[type[errors.AbaxusError], int] = {
    errors.MalformedRequest: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.Conflict: 409,
    errors.IdempotencyInFlight: 409,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.WrongRegion: 421,
    errors.ValidationFailed: 422,
    errors.IdempotencyKeyReused: 422,
    errors.UnprocessableEvent: 422,
    errors.NotImplementedYet: 501,
    errors.Unavailable: 503,
}


def status_of(error: errors.AbaxusError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


# Built once (json.dumps with options builds an encoder per call); responses are never
# circular, so the per-call cycle bookkeeping is skipped too.
_ENCODER = compiled(
    json.JSONEncoder(default=json_default, ensure_ascii=False, check_circular=False)
)


def to_json(value: Any) -> bytes:
    return _ENCODER(value).encode("utf-8")


class _RefusedConstant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _RefusedConstant(f"{name} is not a number ABAXUS accepts")


def parse_json(body: bytes) -> Any:
    """JSON with every non-integer number as an exact Decimal; NaN and Infinity refused.
    Depth is bounded by the parser itself: CPython's decoder recurses per nesting level
    and stops at the interpreter's recursion limit, which is answered as malformed here
    (no ABAXUS body nests beyond a few levels; event properties at most 3)."""
    try:
        return json.loads(
            body.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant
        )
    except RecursionError as error:
        raise errors.MalformedRequest(
            "body is not valid JSON: nested too deeply", code="malformed_json"
        ) from error
    except (UnicodeDecodeError, ValueError) as error:
        raise errors.MalformedRequest(
            f"body is not valid JSON: {_position(error)}", code="malformed_json"
        ) from error


def _position(error: ValueError) -> str:
    """Where the JSON is broken, never what it says (a body may carry personal data)."""
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 at byte {error.start}"
    return str(error) if isinstance(error, _RefusedConstant) else "unreadable"


@dataclass
class Reply:
    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # A body already rendered, of this type (HTML, plain text, JSON its route wrote).
    content_type: str | None = None


@dataclass
class Request:
    """What a route handler sees."""

    raw: flask.Request
    body: bytes
    params: dict[str, str]
    caller: Caller | None
    request_id: str
    # The query parameters its route declares (None: a console page, which reads any).
    declared_query: Mapping[str, QueryParameter] | None = None
    _json: Any = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    def json(self) -> Any:
        if not self._parsed:
            if not self.body.strip():
                raise errors.MalformedRequest("a JSON body is required", code="malformed_json")
            self._json, self._parsed = parse_json(self.body), True
        return self._json

    def query(self, name: str) -> str | None:
        """A query parameter's value, checked against its declaration; a handler reads
        only the parameters its route declares (the OpenAPI document lists them)."""
        value = self.raw.args.get(name)
        if self.declared_query is None:
            return value
        declared = self.declared_query.get(name)
        assert declared is not None, (
            f"query parameter {name!r} is read but not declared by its route (query=...)"
        )
        problem = None if value is None else declared.refusal(value)
        if problem is not None:
            raise errors.ValidationFailed(
                f"{name} {problem}",
                code=declared.code,
                errors=[errors.FieldError(("query", name), problem)],
            )
        return value

    def limit(self) -> int:
        return parse_limit(self.query("limit"))

    def instant(self, name: str, *, required: bool = False) -> datetime | None:
        """An RFC 3339 query parameter (with an offset) as a UTC datetime. Absent is
        None (or 422 when required); present but empty is not an instant (422)."""
        raw = self.query(name)
        if raw is None:
            if required:
                raise errors.ValidationFailed(
                    f"{name} is required", errors=[errors.FieldError(("query", name), "required")]
                )
            return None
        if not RFC3339.match(raw):
            raise errors.ValidationFailed(
                f"{name} must be RFC 3339 with an offset",
                errors=[errors.FieldError(("query", name), "not an RFC 3339 instant")],
            )
        try:
            return to_utc(datetime.fromisoformat(raw.replace("z", "Z")))
        except ValueError as error:  # not a real date, or outside the supported range
            raise errors.ValidationFailed(
                f"{name} {error}"
                if isinstance(error, InstantError)
                else f"{name} is not a real instant",
                errors=[errors.FieldError(("query", name), "not an instant ABAXUS stores")],
            ) from error

    def required_instant(self, name: str) -> datetime:
        instant = self.instant(name, required=True)
        assert instant is not None  # required=True raised otherwise
        return instant

    def one_of(self, name: str, choices: Sequence[str]) -> str | None:
        """An optional query parameter that must be one of `choices`."""
        value = self.query(name)
        if value is not None and value not in choices:
            raise errors.ValidationFailed(
                f"{name} is one of {', '.join(choices)}",
                errors=[errors.FieldError(("query", name), f"unknown {name}")],
            )
        return value

    def required(self, name: str) -> str:
        value = self.query(name)
        if not value:
            raise errors.ValidationFailed(
                f"{name} is required", errors=[errors.FieldError(("query", name), "required")]
            )
        return value

    def require_caller(self) -> Caller:
        assert self.caller is not None, "route declared no scope but needs a caller"
        return self.caller


def validate(model: type[Model], data: Any, *, loc: Sequence[str | int] = ("body",)) -> Model:
    """Validate data against a pydantic model; failures become a 422 problem."""
    return validated(model, data, loc=loc)


RouteHandler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple[str, ...]
    handler: RouteHandler
    scope: str | None
    # For the OpenAPI document (functions/openapi.py): what the body is, what success is.
    body: type[BaseModel] | dict[str, Any] | None = None
    status: int = 200
    implemented: bool = True
    # Fields of its 2xx answer shown once and never stored (Idempotency-Key records).
    secret_fields: tuple[str, ...] = ()
    # A console page (functions/console): HTML, form bodies, session-authenticated by the
    # page itself, and not part of the API document.
    page: bool = False
    # Its success answer (functions/declarations.py): JSON answers are rendered through it.
    response: Answer | None = None
    # The query parameters it reads (and only those: Request.query refuses others).
    query: tuple[QueryParameter, ...] = ()
    # Error statuses beyond those every route of its kind may answer (functions/openapi.py).
    errors: tuple[int, ...] = ()
    # Other success statuses, with the same answer (201 created, 200 the existing one).
    also: tuple[int, ...] = ()
    # Operations a client can call next with what the answer holds (OpenAPI links).
    links: tuple[Link, ...] = ()
    # Request headers it reads besides Authorization and Idempotency-Key.
    headers: tuple[QueryParameter, ...] = ()

    @cached_property
    def query_parameters(self) -> dict[str, QueryParameter]:
        return {parameter.name: parameter for parameter in self.query}


DEAD_LETTER_PATH = "/dead-letters"


class InvoiceIdConverter(BaseConverter):
    """`<invoice:invoice_id>`: an invoice id (`inv_…`), so that the words beside it in
    paths (`/v1/invoices/bulk`, `/v1/invoices/runs/…`) are never taken for an invoice:
    `GET /v1/invoices/bulk` is a 405 naming POST, not a search for invoice "bulk"."""

    regex = r"inv_[^/]+"
    part_isolating = True  # one path segment (werkzeug assumes not when a regex has a /)


class RegionNameConverter(BaseConverter):
    """`<region:region>`: a region name, never the word `duplicates`
    (`/v1/regions/duplicates` is its own resource)."""

    regex = r"(?!duplicates$)[a-z0-9][a-z0-9-]{0,62}"
    part_isolating = True


REGION_NAME_PATTERN = "^(?!duplicates$)[a-z0-9][a-z0-9-]{0,62}$"
PATH_CONVERTERS: dict[str, type[BaseConverter]] = {
    "invoice": InvoiceIdConverter,
    "region": RegionNameConverter,
}


class FunctionApp:
    def __init__(
        self, name: str, *, dead_letter_sink: bool = False, writes_at_central: bool = False
    ) -> None:
        self.name = name
        # Serves POST /dead-letters: the Broker's deadLetterSink (cluster-local, any type).
        self.dead_letter_sink = dead_letter_sink
        # Its writes (the catalog's, pricing's, invoicing's, charging's) belong to the
        # central: a `region` deployment answers them 421 wrong_region naming it (§10).
        self.writes_at_central = writes_at_central
        self.routes: dict[str, Route] = {}
        self.event_handlers: dict[str, cloudevents.EventHandler] = {}
        self.rerun_on_redelivery: set[str] = set()
        self._map = Map(strict_slashes=False, merge_slashes=False, converters=PATH_CONVERTERS)

    # -- declaration -------------------------------------------------------------------

    def route(
        self,
        rule: str,
        methods: Sequence[str] = ("GET",),
        *,
        scope: Any = DEFAULT_SCOPE,
        body: type[BaseModel] | dict[str, Any] | None = None,
        status: int = 200,
        implemented: bool = True,
        secret_fields: tuple[str, ...] = (),
        page: bool = False,
        response: Any = None,
        query: Sequence[QueryParameter] = (),
        errors: Sequence[int] = (),
        also: Sequence[int] = (),
        links: Sequence[Link] = (),
        headers: Sequence[QueryParameter] = (),
        anywhere: bool = False,
    ) -> Callable[[RouteHandler], RouteHandler]:
        """Declare a route. The default scope is `read` for GET and `admin` otherwise;
        `body`, `status`, `response` (a pydantic model or union the JSON answer is rendered
        through, or a hand-written JSON schema), `query`, `errors`, `also` and `links`
        describe it in the OpenAPI document. `anywhere`: a write of a function whose
        writes belong to the central that a region serves too (its own dead letters)."""
        answer = None if response is None else Answer(response)

        def register(handler: RouteHandler) -> RouteHandler:
            for method in methods:
                needed = scope
                if needed is DEFAULT_SCOPE:
                    needed = auth.SCOPE_READ if method == "GET" else auth.SCOPE_ADMIN
                endpoint = f"{method} {rule}"
                self.routes[endpoint] = Route(
                    rule,
                    (method,),
                    handler,
                    needed,
                    body,
                    status,
                    implemented,
                    secret_fields,
                    page,
                    answer,
                    tuple(query),
                    tuple(errors)
                    + (
                        (421,)
                        if self.writes_at_central and method != "GET" and not page and not anywhere
                        else ()
                    ),
                    tuple(also),
                    tuple(links),
                    tuple(headers),
                )
                self._map.add(Rule(rule, methods=[method], endpoint=endpoint))
            return handler

        return register

    def not_implemented(self, rule: str, methods: Sequence[str], issue: str) -> None:
        """A route whose issue has not landed yet: an honest 501, never a fake answer."""

        def handler(request: Request) -> Reply:
            raise errors.NotImplementedYet(
                f"{request.raw.method} {rule} is not implemented yet ({issue})"
            )

        self.route(rule, methods, status=501, implemented=False)(handler)

    def on_event(
        self, *types: str, dedupe: bool = True
    ) -> Callable[[cloudevents.EventHandler], cloudevents.EventHandler]:
        """Handle CloudEvents of these types once per (source, id) — or, with
        dedupe=False, on every delivery (for handlers idempotent by construction)."""

        def register(handler: cloudevents.EventHandler) -> cloudevents.EventHandler:
            for type_ in types:
                self.event_handlers[type_] = handler
                if not dedupe:
                    self.rerun_on_redelivery.add(type_)
            return handler

        return register

    def rules(self) -> list[str]:
        return sorted({route.rule for route in self.routes.values()})

    # -- serving -----------------------------------------------------------------------

    def __call__(self, request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        request_id = request_id_of(request.headers.get("X-Request-Id", ""))
        return self.answer(
            request.method,
            request_id,
            started,
            lambda: self._dispatch(request, request_id),
            route=self.route_label(request.method, request.path),
        )

    def answer(
        self,
        method: str,
        request_id: str,
        started: float,
        dispatch: Callable[[], tuple[str, flask.Response]],
        *,
        route: str,
    ) -> flask.Response:
        """`dispatch`'s response (its route's label and the response) with what every
        answer gets: a 500 problem for anything unexpected (counted and logged under
        `route`, the request's route), X-Request-Id, the request metrics and the request
        log line. The ingest function's event-loop route answers through here too."""
        token = log_context.set({"function": self.name, "request_id": request_id})
        route_label = route
        try:
            route_label, response = dispatch()
        except Exception:
            # The outermost boundary: the only place that catches everything.
            log.exception("unhandled error", extra={"route": route, "method": method})
            response = self._problem(
                errors.AbaxusError(
                    INTERNAL_ERROR_DETAIL,
                    code="internal_error",
                    title="Internal server error",
                ),
                request_id,
                status=500,
            )
        finally:
            log_context.reset(token)
        response.headers["X-Request-Id"] = request_id
        elapsed = time.perf_counter() - started
        http_requests.labels(self.name, route_label, method, str(response.status_code)).inc()
        http_request_duration.labels(self.name, route_label).observe(elapsed)
        if self.name == "ingest" and route_label.startswith("/v1/events") and method == "POST":
            stats.ingest_latency.observe(elapsed)  # the overview's p95, across every pod
        if route_label not in {"/healthz", "/metrics"}:
            log.info(
                "request",
                extra={
                    "function": self.name,
                    "request_id": request_id,
                    "method": method,
                    "route": route_label,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        return response

    def _refusing(
        self,
        serve: Callable[[flask.Request, str], flask.Response],
        request: flask.Request,
        request_id: str,
    ) -> flask.Response:
        """A CloudEvent path's answer; its refusals (size, media type) as problems."""
        try:
            return serve(request, request_id)
        except errors.AbaxusError as error:
            return self._problem(error, request_id)

    def route_label(self, method: str, path: str) -> str:
        """The label a request is counted and logged under: its route's rule, the kind of
        path (probes, CloudEvents), or "unmatched"."""
        if path in {"/healthz", "/readyz", "/metrics"}:
            return path
        if path == "/":
            return "cloudevent"
        if path == DEAD_LETTER_PATH and self.dead_letter_sink:
            return "dead-letter"
        try:
            endpoint, _ = self._map.bind("localhost").match(path, method=method)
        except (RouteNotFound, RouteMethodNotAllowed):
            return "unmatched"
        return self.routes[endpoint].rule

    def _dispatch(  # noqa: PLR0911 - one early answer per kind of path
        self, request: flask.Request, request_id: str
    ) -> tuple[str, flask.Response]:
        path = request.path
        if path in {"/healthz", "/readyz", "/metrics"} and request.method in {"GET", "HEAD"}:
            return path, self._operational(path)
        if path == "/" and request.method == "POST":
            return "cloudevent", self._refusing(self._cloudevent, request, request_id)
        if path == DEAD_LETTER_PATH and request.method == "POST" and self.dead_letter_sink:
            return "dead-letter", self._refusing(self._dead_letter, request, request_id)
        try:
            endpoint, params = self._map.bind("localhost").match(path, method=request.method)
        except RouteNotFound:
            return "unmatched", self._problem(
                errors.NotFound(f"no route {path}", code="route_not_found"), request_id
            )
        except RouteMethodNotAllowed as error:
            allowed = ", ".join(sorted(error.valid_methods or []))
            response = self._problem(
                errors.MethodNotAllowed(f"{request.method} is not allowed on {path}"), request_id
            )
            response.headers["Allow"] = allowed
            return "unmatched", response
        route = self.routes[endpoint]
        try:
            with requests.request_transaction():
                return route.rule, self._serve(route, request, dict(params), request_id)
        except errors.AbaxusError as error:
            return route.rule, self._problem(error, request_id)

    def _serve(
        self, route: Route, request: flask.Request, params: dict[str, str], request_id: str
    ) -> flask.Response:
        key = request.headers.get("Idempotency-Key")
        caller = self._authenticate(request, route.scope, request_id)
        if self.writes_at_central and request.method != "GET" and 421 in route.errors:
            refuse_outside_central(self.name)
        body = _read_body(request)
        if not route.page:  # console pages post forms
            require_json_body(request.content_type, body)
        for name, value in (*params.items(), *request.args.items()):
            if isinstance(value, str) and "\x00" in value:
                raise errors.ValidationFailed(
                    f"{name} contains a NUL character",
                    code="invalid_characters",
                    errors=[errors.FieldError(("query", name), "NUL character")],
                )
        declared = None if route.page else route.query_parameters
        context = Request(request, body, params, caller, request_id, declared)
        if request.method != "POST" or key is None or caller is None:
            return render(route.handler(context), route.response)
        if not IDEMPOTENCY_KEY_PATTERN.match(key):
            raise errors.ValidationFailed(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
                code="invalid_idempotency_key",
            )

        def compute() -> idempotency.StoredResponse:
            return _stored(render(route.handler(context), route.response))

        def render_error(error: errors.AbaxusError) -> idempotency.StoredResponse:
            return _stored(self._problem(error, request_id))

        stored, replayed = idempotency.run_once(
            api_key_id=caller.api_key_id,
            key=key,
            method=request.method,
            path=request.full_path.rstrip("?"),
            body=body,
            compute=compute,
            render_error=render_error,
            kept=lambda response: idempotency.without_secrets(response, route.secret_fields),
        )
        response = flask.Response(stored.body, status=stored.status, headers=stored.headers)
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    def _authenticate(
        self, request: flask.Request, scope: str | None, request_id: str
    ) -> Caller | None:
        if scope is None:
            return None
        caller = api_keys.authenticate(_bearer_secret(request), request_id)
        forbidden = api_keys.scope_error(caller, scope)
        if forbidden is not None:
            raise forbidden
        return caller

    def _operational(self, path: str) -> flask.Response:
        if path == "/healthz":
            return flask.Response(
                to_json({"status": "ok", "function": self.name}), 200, mimetype=JSON_CONTENT_TYPE
            )
        if path == "/metrics":
            return flask.Response(render_metrics(), 200, content_type=METRICS_CONTENT_TYPE)
        ready, detail = health.readiness()
        body = {"status": "ready" if ready else "not_ready", "function": self.name, **detail}
        return flask.Response(to_json(body), 200 if ready else 503, mimetype=JSON_CONTENT_TYPE)

    def _cloudevent(self, request: flask.Request, request_id: str) -> flask.Response:
        body = _read_body(request)
        headers = dict(request.headers)
        require_cloudevent(headers, body)
        try:
            event = from_http(headers, body)
            data = decode_event_data(headers, body)
        except (CloudEventError, errors.MalformedRequest) as error:
            cloudevents_received.labels(self.name, "unknown", "invalid").inc()
            return self._problem(
                errors.MalformedRequest(
                    f"not a valid CloudEvent: {error}", code="invalid_cloudevent"
                ),
                request_id,
            )
        type_ = str(event["type"])
        attributes = event.get_attributes()
        received = cloudevents.ReceivedEvent(
            id=str(event["id"]),
            source=str(event["source"]),
            type=type_,
            data=data,
            subject=attributes.get("subject"),
            time=str(attributes["time"]) if attributes.get("time") else None,
            extensions={
                k: v
                for k, v in attributes.items()
                if k
                not in {
                    "id",
                    "source",
                    "type",
                    "specversion",
                    "datacontenttype",
                    "dataschema",
                    "subject",
                    "time",
                }
            },
        )
        handler = self.event_handlers.get(type_)
        if handler is None:
            cloudevents_received.labels(self.name, type_, "unsupported").inc()
            return self._problem(
                errors.UnprocessableEvent(
                    f"function {self.name!r} does not handle CloudEvents of type {type_!r}",
                    code="unsupported_event_type",
                ),
                request_id,
            )
        try:
            first = cloudevents.handle_once(
                self.name, received, handler, dedupe=type_ not in self.rerun_on_redelivery
            )
        except errors.AbaxusError as error:
            status = status_of(error)
            if status < 500:
                # Never retried: 422 (404/409 would make Knative retry it; core/domain/delivery).
                cloudevents_received.labels(self.name, type_, "rejected").inc()
                log.warning(
                    "CloudEvent rejected",
                    extra={"ce_id": received.id, "ce_type": type_, "code": error.code},
                )
                return self._problem(error, request_id, status=delivery.NEVER_RETRIED_STATUS)
            cloudevents_received.labels(self.name, type_, "failed").inc()
            return self._problem(error, request_id)
        cloudevents_received.labels(self.name, type_, "handled" if first else "duplicate").inc()
        # Knative: an empty 202 is an acknowledgement; a non-empty non-CloudEvent 2xx is not.
        return flask.Response(status=202)

    def _dead_letter(self, request: flask.Request, request_id: str) -> flask.Response:
        """Keep an undeliverable CloudEvent exactly as received, whatever its type."""
        body = _read_body(request)
        headers = dict(request.headers)
        require_cloudevent(headers, body)
        try:
            attributes = dict(from_http(headers, body).get_attributes())
        except CloudEventError as error:
            return self._problem(
                errors.MalformedRequest(
                    f"not a valid CloudEvent: {error}", code="invalid_cloudevent"
                ),
                request_id,
            )
        for name in ("knativeerrordest", "knativeerrorcode", "knativeerrordata"):
            # The local broker passes these as headers when the event is in structured mode.
            attributes.setdefault(name, request.headers.get(f"X-Abaxus-{name}"))
        first = dead_letters.keep(attributes, headers, body)
        log.error(
            "dead letter kept",
            extra={
                "ce_id": attributes["id"],
                "ce_type": attributes["type"],
                "first": first,
                "error_code": attributes.get("knativeerrorcode"),
            },
        )
        return flask.Response(status=202)

    def problem(self, error: errors.AbaxusError, request_id: str) -> flask.Response:
        """The problem+json answer to `error`, as every route renders it."""
        return self._problem(error, request_id)

    def _problem(
        self, error: errors.AbaxusError, request_id: str, *, status: int | None = None
    ) -> flask.Response:
        status = status or status_of(error)
        body = {
            "type": f"https://abaxus.dev/problems/{error.code.replace('_', '-')}",
            "title": error.title,
            "status": status,
            "detail": error.detail,
            "code": error.code,
            "request_id": request_id,
            "errors": [
                {"loc": list(item.loc), "msg": item.msg, "type": item.type} for item in error.errors
            ],
        }
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return flask.Response(
            to_json(body), status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE
        )


def request_id_of(header: str) -> str:
    """The caller's X-Request-Id when it is a usable one, otherwise a new id."""
    return header if REQUEST_ID_PATTERN.match(header) else "req_" + uuid.uuid4().hex


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    """application/json, or any application/*+json (merge-patch, problem, cloudevents)."""
    base = media_type(content_type)
    return base == JSON_CONTENT_TYPE or (base.startswith("application/") and base.endswith("+json"))


def require_json_body(content_type: str | None, body: bytes) -> None:
    """A request with a body must say it is JSON; an empty one may say anything."""
    if body and not is_json(content_type):
        raise errors.UnsupportedMediaType(
            f"the body must be {JSON_CONTENT_TYPE} (sent: {media_type(content_type) or 'none'})"
        )


def require_cloudevent(headers: Mapping[str, str], body: bytes) -> None:
    """Binary mode (ce-* headers; data JSON or none) or structured mode
    (application/cloudevents+json); a body of any other media type is 415 (a JSON body
    that is not a CloudEvent is then the SDK's 400)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type")
    if not body or ("ce-specversion" in lowered and content_type is None):
        return
    if not is_json(content_type):
        raise errors.UnsupportedMediaType(
            f"a CloudEvent's body is JSON: binary mode (ce-* headers) with JSON data, or "
            f"structured mode ({CLOUDEVENT_CONTENT_TYPE}); sent: "
            f"{media_type(content_type) or 'none'}"
        )


def _read_body(request: flask.Request) -> bytes:
    limit = settings().request_body_bytes_max
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"request body over {limit} bytes", code="payload_too_large")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise errors.PayloadTooLarge(f"request body over {limit} bytes", code="payload_too_large")
    return body


def decode_event_data(headers: Mapping[str, str], body: bytes) -> Any:
    """A CloudEvent's data with JSON numbers as Decimal (the SDK would give floats)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if "ce-specversion" in lowered:  # binary mode: the body is the data
        if not body:
            return None
        if content_type in {"", "application/json"} or content_type.endswith("+json"):
            return parse_json(body)
        return body
    envelope = parse_json(body)
    if not isinstance(envelope, dict):
        raise errors.MalformedRequest("structured CloudEvent must be a JSON object")
    if "data_base64" in envelope:
        return base64.b64decode(envelope["data_base64"])
    return envelope.get("data")


def refuse_outside_central(function: str) -> None:
    """A write that belongs to the central sent to a `region` deployment — the catalog's
    (which replicates to the regions from there), pricing's, invoicing's, charging's —:
    421 naming the central (API.md §10)."""
    config = settings()
    if config.abaxus_role == "region":
        central = config.abaxus_central_url or "the central deployment"
        what = "catalog writes" if function == "api" else f"writes of {function}"
        raise errors.WrongRegion(
            f"this is region {config.abaxus_region}: {what} go to {central}",
            code="wrong_region",
        )


def render(reply: Reply, answer: Answer | None = None) -> flask.Response:
    """A reply as a response: a body already rendered as it is; a JSON body through the
    route's declared answer (validated and serialized by its model) when it has one."""
    if reply.body is None:
        return flask.Response(status=reply.status, headers=reply.headers)
    if reply.content_type is not None:
        return flask.Response(
            reply.body, status=reply.status, headers=reply.headers, content_type=reply.content_type
        )
    return flask.Response(
        to_json(reply.body if answer is None else answer.dump(reply.body)),
        status=reply.status,
        headers=reply.headers,
        content_type=JSON_CONTENT_TYPE,
    )


def _stored(response: flask.Response) -> idempotency.StoredResponse:
    headers = {"Content-Type": response.content_type or JSON_CONTENT_TYPE}
    for name in ("Location", idempotency.SECRET_REDACTED_HEADER):
        if name in response.headers:
            headers[name] = response.headers[name]
    return idempotency.StoredResponse(response.status_code, response.get_data(), headers)


def _bearer_secret(request: flask.Request) -> str:
    secret = bearer_of(request.headers.get("Authorization", ""))
    if secret is None:
        raise errors.Unauthenticated("an API key is required: Authorization: Bearer <key>")
    return secret


def bearer_of(header: str) -> str | None:
    """The secret of an `Authorization: Bearer <secret>` header; None for anything else."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def list_reply(data: list[Any], next_cursor: str | None) -> Reply:
    return Reply({"data": data, "next_cursor": next_cursor})
