"""What functions-framework answers by itself, made problem+json like every ABAXUS answer.

The framework keeps `/robots.txt` and `/favicon.ico` for itself (an HTML 404 from Flask, a
plain-text one from its ASGI app) and answers errors raised before a function runs in its
own formats. `install()` runs while the framework loads functions/main.py — inside the
Flask app's context, before it builds its ASGI routes — and puts problem documents there:
- Flask: an error handler for every HTTP error, on the app being created (public API);
- ASGI: the module function its not-found routes point to. That is a private name of
  functions-framework, replaced because no public hook exists; the version is pinned to
  3.10.x in pyproject.toml for this reason, and tests/contract/test_framework_answers.py
  fails if an upgrade moves it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import flask
import functions_framework.aio as framework_asgi
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from werkzeug.exceptions import HTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_body(status: int, code: str, detail: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "type": f"https://abaxus.dev/problems/{code.replace('_', '-')}",
            "title": "Not found" if status == 404 else "Error",
            "status": status,
            "detail": detail,
            "code": code,
            "request_id": request_id,
            "errors": [],
        }
    ).encode()


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


def _flask_problem(error: HTTPException) -> flask.Response:
    status = error.code or 500
    code = "route_not_found" if status == 404 else f"http_{status}"
    request_id = _request_id()
    return flask.Response(
        problem_body(status, code, "no route here", request_id),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers={"X-Request-Id": request_id},
    )


async def _asgi_not_found(request: StarletteRequest) -> StarletteResponse:
    request_id = _request_id()
    return StarletteResponse(
        problem_body(404, "route_not_found", "no route here", request_id),
        status_code=404,
        media_type=PROBLEM_CONTENT_TYPE,
        headers={"X-Request-Id": request_id},
    )


def install() -> None:
    if flask.has_app_context():
        flask.current_app.register_error_handler(HTTPException, _flask_problem)
    target: Any = framework_asgi
    target._handle_not_found = _asgi_not_found
