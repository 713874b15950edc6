"""The OpenAPI document, generated from the routes every function declares, so that the
document and the code cannot drift (tests/contract/test_openapi.py compares it with the
committed docs/openapi.json; `abaxus openapi` rewrites that file)."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from pydantic import BaseModel

from functions.routes import FUNCTIONS

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "errors"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "stable, machine-readable"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array"},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
# Routes that answer a rendered document instead of JSON, told by their path's extension
# (`/v1/invoices/{invoice_id}.pdf`): the media type and schema of their success response.
DOCUMENT_RESPONSES: dict[str, dict[str, Any]] = {
    ".html": {"text/html": {"schema": {"type": "string"}}},
    ".pdf": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
}
PROBLEM_RESPONSE = {
    "description": "problem",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _schema(body: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, dict):
        return body
    return body.model_json_schema(ref_template="#/components/schemas/{model}")


def _operation_id(function: str, method: str, route: Any) -> str:
    if route.implemented:
        return f"{function}.{route.handler.__name__}"
    slug = re.sub(r"[^a-z0-9]+", "_", route.rule.lower()).strip("_")
    return f"{function}.{method.lower()}_{slug}"


def _operation(function: str, method: str, route: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    doc = (route.handler.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    operation: dict[str, Any] = {
        "operationId": _operation_id(function, method, route),
        "summary": doc or route.handler.__name__.replace("_", " "),
        "tags": [function],
        "x-abaxus-function": function,
        "responses": {
            str(route.status): {
                "description": "success" if route.implemented else "not implemented yet"
            },
            "4XX": PROBLEM_RESPONSE,
        },
    }
    for extension, content in DOCUMENT_RESPONSES.items():
        if route.rule.endswith(extension):
            operation["responses"][str(route.status)]["content"] = content
    if route.scope is None:
        operation["security"] = []
    else:
        operation["security"] = [{"apiKey": []}]
        operation["x-abaxus-scope"] = route.scope
    names = PARAMETER.findall(route.rule)
    if names:
        operation["parameters"] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    if route.body is not None:
        schema = _schema(route.body)
        schemas.update(schema.pop("$defs", {}))
        operation["requestBody"] = {
            "required": method != "POST" or not route.rule.endswith("/cancel"),
            "content": {"application/json": {"schema": schema}},
        }
    if method == "POST" and route.scope is not None:
        operation["parameters"] = [
            *operation.get("parameters", []),
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            },
        ]
    return operation


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Problem": PROBLEM}
    for function in FUNCTIONS:
        app = importlib.import_module(f"functions.{function}").APP
        for endpoint, route in sorted(app.routes.items()):
            if route.page:  # the console's HTML pages are not API operations
                continue
            method, rule = endpoint.split(" ", 1)
            path = PARAMETER.sub(r"{\1}", rule)
            paths.setdefault(path, {})[method.lower()] = _operation(
                function, method, route, schemas
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
            "schemas": dict(sorted(schemas.items())),
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
