"""The one-process dev server: every function on one port, plus the local broker.

Each function is functions-framework's own Flask app for its target (`create_app`), the
same object `functions-framework --target X` serves in a Knative pod. This WSGI
dispatcher only chooses which app answers:

    /v1/... /dashboard       -> the owner in functions/routes.py ROUTE_OWNERS
    /healthz /readyz /metrics -> the api function (one process, one metrics registry)
    POST / and POST /_broker  -> the local broker's ingress (K_SINK points here)
    /_functions/<name>/...    -> that function directly (how the broker delivers)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudevents.exceptions import GenericException as CloudEventError
from functions_framework import create_app
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from functions.broker import LocalBroker
from functions.routes import FUNCTIONS, owner_of
from functions.topology import load_topology

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("abaxus.devserver")

MAIN_SOURCE = Path(__file__).resolve().parent / "main.py"
BROKER_PATH = "/_broker"
FUNCTIONS_PATH = "/_functions/"
BROKER_BODY_BYTES_MAX = 1024 * 1024


class DevServer:
    def __init__(self, *, base_url: str, knative_dir: Path) -> None:
        self.base_url = base_url.rstrip("/")
        self.apps: dict[str, WSGIApplication] = {
            name: create_app(target=name, source=str(MAIN_SOURCE))  # type: ignore[no-untyped-call]
            for name in FUNCTIONS
        }
        self.topology = load_topology(knative_dir)
        unknown = set(self.topology.functions_by_service.values()) - set(self.apps)
        if unknown:
            raise ValueError(f"knative/ targets functions that do not exist: {sorted(unknown)}")
        self.broker = LocalBroker(self.topology, self.function_url)

    def function_url(self, function: str) -> str:
        return f"{self.base_url}{FUNCTIONS_PATH}{function}/"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "POST" and path in {"/", BROKER_PATH, BROKER_PATH + "/"}:
            return self._ingress(environ, start_response)
        if path.startswith(FUNCTIONS_PATH):
            name, _, rest = path[len(FUNCTIONS_PATH) :].partition("/")
            if name in self.apps:
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + FUNCTIONS_PATH + name
                environ["PATH_INFO"] = "/" + rest
                return self.apps[name](environ, start_response)
        owner = owner_of(path) or "api"  # api answers unknown paths with a 404 problem
        return self.apps[owner](environ, start_response)

    def _ingress(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = WsgiRequest(environ)
        body = request.stream.read(BROKER_BODY_BYTES_MAX + 1)
        response: WsgiResponse
        if len(body) > BROKER_BODY_BYTES_MAX:
            response = _problem(413, "payload_too_large", "CloudEvent over 1 MiB")
        else:
            try:
                self.broker.publish(dict(request.headers), body)
                response = WsgiResponse(status=202)
            except CloudEventError as error:
                response = _problem(400, "invalid_cloudevent", f"not a valid CloudEvent: {error}")
        return response(environ, start_response)


def _problem(status: int, code: str, detail: str) -> WsgiResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": "Broker",
        "status": status,
        "detail": detail,
        "code": code,
    }
    return WsgiResponse(json.dumps(body), status=status, content_type="application/problem+json")
