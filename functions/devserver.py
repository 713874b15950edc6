"""The one-process dev server: every function on one port, plus the local broker.

Each function is functions-framework's own app for its target (`create_app`: Flask, or
Starlette for the ASGI ingest function), the same object `functions-framework --target X`
serves in a Knative pod. This ASGI dispatcher only chooses which app answers:

    /v1/... /dashboard       -> the owner in functions/routes.py ROUTE_OWNERS
    /healthz /readyz /metrics -> the api function (one process, one metrics registry)
    POST / and POST /_broker  -> the local broker's ingress (K_SINK points here)
    /_functions/<name>/...    -> that function directly (how the broker delivers)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudevents.exceptions import GenericException as CloudEventError
from flask import Flask
from functions_framework import create_app
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from core.domain import errors
from functions import asgi
from functions.broker import LocalBroker
from functions.framework import problem_body
from functions.http import INTERNAL_ERROR_DETAIL, require_cloudevent, status_of
from functions.routes import FUNCTIONS, owner_of
from functions.topology import load_topology

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("abaxus.devserver")

MAIN_SOURCE = Path(__file__).resolve().parent / "main.py"
BROKER_PATH = "/_broker"
FUNCTIONS_PATH = "/_functions/"
BROKER_BODY_BYTES_MAX = 1024 * 1024


class DevServer:
    """An ASGI application (the dev server runs event-loop workers, as the ingest function's
    pods do): an ASGI function's app is called as it is; a Flask app runs in a request
    thread through `functions.asgi`, as it would in its own pod's gthread worker."""

    def __init__(self, *, base_url: str, knative_dir: Path) -> None:
        self.base_url = base_url.rstrip("/")
        apps = {
            name: create_app(target=name, source=str(MAIN_SOURCE))  # type: ignore[no-untyped-call]
            for name in FUNCTIONS
        }
        self.apps: dict[str, Asgi] = {
            name: _as_asgi(app) if isinstance(app, Flask) else app for name, app in apps.items()
        }
        self.topology = load_topology(knative_dir)
        unknown = set(self.topology.functions_by_service.values()) - set(self.apps)
        if unknown:
            raise ValueError(f"knative/ targets functions that do not exist: {sorted(unknown)}")
        self.broker = LocalBroker(self.topology, self.function_url)
        self._ingress_app = _as_asgi(self._ingress)

    def function_url(self, function: str) -> str:
        return f"{self.base_url}{FUNCTIONS_PATH}{function}/"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "") or "/"
        if scope["method"] == "POST" and path in {"/", BROKER_PATH, BROKER_PATH + "/"}:
            await self._ingress_app(scope, receive, send)
            return
        if path.startswith(FUNCTIONS_PATH):
            name = path[len(FUNCTIONS_PATH) :].partition("/")[0]
            if name in self.apps:
                root = scope.get("root_path", "") + FUNCTIONS_PATH + name
                await self.apps[name]({**scope, "root_path": root}, receive, send)
                return
        owner = owner_of(path) or "api"  # api answers unknown paths with a 404 problem
        await self.apps[owner](scope, receive, send)

    def _ingress(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The broker's ingress (K_SINK): every refusal a problem document, a database
        outage a 503 (the sender retries), never a bare 500."""
        request = WsgiRequest(environ)
        body = request.stream.read(BROKER_BODY_BYTES_MAX + 1)
        response: WsgiResponse
        try:
            if len(body) > BROKER_BODY_BYTES_MAX:
                raise errors.PayloadTooLarge("CloudEvent over 1 MiB")
            require_cloudevent(dict(request.headers), body)
            try:
                self.broker.publish(dict(request.headers), body)
            except CloudEventError as error:
                raise errors.MalformedRequest(
                    f"not a valid CloudEvent: {error}", code="invalid_cloudevent"
                ) from error
            response = WsgiResponse(status=202)
        except errors.AbaxusError as error:
            response = _problem(status_of(error), error.code, error.detail)
        except Exception:  # the ingress's outermost boundary
            log.exception("broker ingress failed")
            response = _problem(500, "internal_error", INTERNAL_ERROR_DETAIL)
        return response(environ, start_response)


Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _as_asgi(app: Any) -> Asgi:
    async def call(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asgi.serve_wsgi(app, scope, receive, send)

    return call


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _problem(status: int, code: str, detail: str) -> WsgiResponse:
    request_id = "req_" + uuid.uuid4().hex
    return WsgiResponse(
        problem_body(status, code, detail, request_id),
        status=status,
        content_type="application/problem+json",
        headers={"X-Request-Id": request_id},
    )
