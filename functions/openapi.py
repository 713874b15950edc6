"""The OpenAPI document, generated from the routes every function declares, so that the
document and the code cannot drift (tests/contract/test_openapi.py compares it with the
committed docs/openapi.json; `abaxus openapi` rewrites that file).

Request and response schemas come from the same pydantic models the routes validate their
bodies with and render their answers through (functions/declarations.py); the error
statuses of an operation follow from what it is (scoped, has a body, has path or query
parameters) plus the ones its route names."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from pydantic import TypeAdapter

from core.domain.events import CUSTOMER_ID, IDEMPOTENCY_KEY_CHARS_MAX, METRIC_KEY
from functions.http import REGION_NAME_PATTERN, Route
from functions.routes import FUNCTIONS

REF = "#/components/schemas/{model}"
PROBLEM_REF = REF.format(model="Problem")
PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `code` is stable and machine-readable",
    "required": ["type", "title", "status", "detail", "code", "request_id", "errors"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "additionalProperties": False,
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
# `<name>`, `<converter:name>` or `<converter(arguments):name>`
PARAMETER = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")
# Path parameters that are client-chosen ids: their patterns (others are server-made ids).
PATH_PATTERNS = {
    "customer_id": CUSTOMER_ID.pattern,
    "key": METRIC_KEY.pattern,
    "code": r"^[a-z0-9][a-z0-9_\-]{0,63}$",
}
# Routes that answer a rendered document instead of JSON, told by their path's extension
# (`/v1/invoices/{invoice_id}.pdf`): the media type and schema of their success response.
DOCUMENT_RESPONSES: dict[str, dict[str, Any]] = {
    ".html": {"text/html": {"schema": {"type": "string"}}},
    ".pdf": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    # a metric's contract as an Open Data Contract Standard (v3) document
    "/contract": {
        "application/yaml": {
            "schema": {
                "type": "object",
                "description": "an Open Data Contract Standard document (v3.0.2), as YAML",
                "required": ["apiVersion", "kind", "id", "version", "schema"],
                "properties": {
                    "apiVersion": {"const": "v3.0.2"},
                    "kind": {"const": "DataContract"},
                    "id": {"type": "string"},
                    "version": {"type": "string"},
                    "schema": {"type": "array", "items": {"type": "object"}},
                },
            }
        }
    },
}
# Every error answer is a problem document; one shared response per status.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("MalformedRequest", "the body is not JSON (malformed_json), or not the provider's"),
    401: (
        "Unauthenticated",
        "no API key, an unknown or a revoked one (or a webhook's signature does not verify)",
    ),
    403: ("Forbidden", "the API key lacks the operation's scope (insufficient_scope)"),
    404: ("NotFound", "what the path (or the body) names does not exist"),
    409: (
        "Conflict",
        "a conflict with the current state (the code says which), or a request with the same "
        "Idempotency-Key still in flight (idempotency_request_in_flight)",
    ),
    413: ("PayloadTooLarge", "the body is over 1 MiB (a batch over 500 events: batch_too_large)"),
    415: ("UnsupportedMediaType", "a body that is not application/json"),
    421: (
        "WrongRegion",
        "with ABAXUS_ENFORCE_RESIDENCY, an event of a customer homed in another residency "
        "zone (wrong_region, naming the home region)",
    ),
    422: (
        "ValidationFailed",
        "a body, parameter or header that is not valid (`errors` says where), a request the "
        "current state refuses, or an Idempotency-Key reused with another request",
    ),
    501: ("NotImplementedYet", "not implemented yet"),
    503: ("Unavailable", "the database (or the broker) is unavailable: retry"),
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "makes the request safe to retry: a replay answers the first response "
    "with `Idempotent-Replayed: true`",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_CHARS_MAX,
        "pattern": "^[\\x21-\\x7e]+$",
    },
}


def _operation_id(function: str, method: str, route: Route) -> str:
    if route.implemented:
        return f"{function}.{route.handler.__name__}"
    slug = re.sub(r"[^a-z0-9]+", "_", route.rule.lower()).strip("_")
    return f"{function}.{method.lower()}_{slug}"


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    parameters = []
    for converter, arguments, name in PARAMETER.findall(rule):
        schema: dict[str, Any]
        if converter == "invoice":
            schema = {"type": "string", "pattern": "^inv_[^/]+$"}
        elif converter == "region":
            schema = {"type": "string", "pattern": REGION_NAME_PATTERN}
        elif converter == "int":
            schema = {"type": "integer", "minimum": 0}
            limit = re.search(r"max=(\d+)", arguments or "")
            if limit:
                schema["maximum"] = int(limit.group(1))
        else:
            schema = {"type": "string", "minLength": 1}
            if name in PATH_PATTERNS:
                schema["pattern"] = PATH_PATTERNS[name]
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return parameters


def error_statuses(method: str, route: Route) -> list[int]:
    """Every status other than success the operation may answer."""
    statuses = {503, *route.errors}
    if route.scope is not None:
        statuses |= {401, 403}
    if PARAMETER.search(route.rule):
        statuses.add(404)
    if route.query or route.headers:
        statuses.add(422)
    if route.body is not None:
        statuses |= {400, 413, 415, 422}
    if method == "POST" and route.scope is not None:  # the Idempotency-Key header
        statuses |= {409, 422}
    if not route.implemented:
        statuses.add(501)
    return sorted(statuses)


def _success(route: Route, schema: dict[str, Any] | None, path: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": "success"}
    for extension, content in DOCUMENT_RESPONSES.items():
        if path.endswith(extension):
            response["content"] = content
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    if route.links:
        response["links"] = {link.name: link.openapi() for link in route.links}
    return response


SchemaKey = tuple[str, int]  # ("body" or "response", id of the route)


def _operation(
    function: str, method: str, route: Route, path: str, schemas: dict[SchemaKey, Any]
) -> dict[str, Any]:
    doc = " ".join((route.handler.__doc__ or "").strip().split("\n\n")[0].split())
    operation: dict[str, Any] = {
        "operationId": _operation_id(function, method, route),
        "summary": doc or route.handler.__name__.replace("_", " "),
        "tags": [function],
        "x-abaxus-function": function,
    }
    if route.scope is None:
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}]
        operation["x-abaxus-scope"] = route.scope
    parameters = [
        *_path_parameters(route.rule),
        *(parameter.openapi() for parameter in (*route.query, *route.headers)),
    ]
    if method == "POST" and route.scope is not None:
        parameters.append(IDEMPOTENCY_KEY)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            # A cancellation's body is optional: `{}` and none both cancel at period end.
            "required": not route.rule.endswith("/cancel"),
            "content": {"application/json": {"schema": schemas.pop(("body", id(route)))}},
        }
    success = schemas.pop(("response", id(route)), None) if route.implemented else None
    responses = {str(route.status): _success(route, success, path)}
    for status in route.also:
        responses[str(status)] = _success(route, success, path)
    for status in error_statuses(method, route):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    operation["responses"] = responses
    return operation


def _schemas(routes: list[Route]) -> tuple[dict[SchemaKey, Any], dict[str, Any]]:
    """Every request and response schema at once, so that models shared by operations are
    one component each (and two models of one name get distinct names)."""
    inputs: list[tuple[SchemaKey, Any, TypeAdapter[Any]]] = []
    found: dict[SchemaKey, Any] = {}
    for route in routes:
        if isinstance(route.body, dict):
            found["body", id(route)] = route.body
        elif route.body is not None:
            inputs.append((("body", id(route)), "validation", TypeAdapter(route.body)))
        answer = route.response
        if answer is not None and answer.schema is not None:
            found["response", id(route)] = answer.schema
        elif answer is not None and answer.adapter is not None:
            inputs.append((("response", id(route)), "serialization", answer.adapter))
    generated, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)
    found |= {key: schema for (key, _mode), schema in generated.items()}
    return found, definitions.get("$defs", {})


def _routes() -> list[tuple[str, str, str, Route]]:
    found = []
    for function in FUNCTIONS:
        app = importlib.import_module(f"functions.{function}").APP
        for endpoint, route in sorted(app.routes.items()):
            if route.page:  # the console's HTML pages are not API operations
                continue
            method, rule = endpoint.split(" ", 1)
            found.append((function, method, PARAMETER.sub(r"{\3}", rule), route))
    return found


def document() -> dict[str, Any]:
    routes = _routes()
    schemas, definitions = _schemas([route for *_, route in routes])
    paths: dict[str, dict[str, Any]] = {}
    for function, method, path, route in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(
            function, method, route, path, schemas
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ABAXUS",
            "version": "0.1.0",
            "description": (
                "Self-hosted usage-based billing. Where the API contract is silent, this "
                "document and docs/concepts.md say what ABAXUS does."
            ),
        },
        "servers": [{"url": "http://localhost:8080"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted({"Problem": PROBLEM, **definitions}.items())),
            "responses": {
                name: {
                    "description": description,
                    "content": {"application/problem+json": {"schema": {"$ref": PROBLEM_REF}}},
                }
                for name, description in sorted(ERRORS.values())
            },
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Bearer <API key>; scopes events:write, read, admin",
                }
            },
        },
    }


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
