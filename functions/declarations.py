"""What a route declares beyond its handler, for its answers and its OpenAPI operation:
the query parameters it reads, the shape of its success answer, the error statuses it may
answer, and links from its answer to other operations (what a client — or schemathesis'
stateful phase — can call next with the ids it got back).

The declarations are enforced, not only documented: a handler may read only the query
parameters its route declares (`Request.query` refuses any other), and a typed answer is
validated and serialized through its model (`Answer.dump`), so docs/openapi.json cannot
drift from what the routes do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter

from core.domain.pagination import CURSOR_CHARS_MAX, LIMIT_DEFAULT, LIMIT_MAX

# -- query parameters ----------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParameter:
    """A query parameter as declared. Its string constraints (length, pattern, enum) are
    checked whenever a handler reads it (`Request.query`); numbers and instants are
    checked by the readers that parse them (`Request.limit`, `Request.instant`)."""

    name: str
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""
    # The code of the 422 a value outside the string constraints gets.
    code: str = "validation_error"
    location: Literal["query", "header"] = "query"

    def refusal(self, raw: str) -> str | None:
        """Why `raw` is not a value of this parameter (None when it is)."""
        if self.schema.get("type") != "string":
            return None
        enum = self.schema.get("enum")
        if enum is not None and raw not in enum:
            return f"one of {', '.join(enum)}"
        if len(raw) < self.schema.get("minLength", 0):
            return "must not be empty"
        if len(raw) > self.schema.get("maxLength", len(raw)):
            return f"at most {self.schema['maxLength']} characters"
        pattern = self.schema.get("pattern")
        if pattern is not None and re.search(pattern, raw) is None:
            return f"does not match {pattern}"
        return None

    def openapi(self) -> dict[str, Any]:
        parameter: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required,
            "schema": dict(self.schema),
        }
        if self.description:
            parameter["description"] = self.description
        return parameter


def text(
    name: str,
    description: str = "",
    *,
    required: bool = False,
    max_length: int = 255,
    pattern: str | None = None,
) -> QueryParameter:
    """A string; required ones must not be empty (`Request.required`)."""
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": max_length}
    if pattern is not None:
        schema["pattern"] = pattern
    return QueryParameter(name, schema, required, description)


def header(name: str, description: str = "", *, required: bool = False) -> QueryParameter:
    """A request header the route reads (documented; its handler checks it)."""
    return QueryParameter(name, {"type": "string"}, required, description, location="header")


def instant(name: str, description: str = "", *, required: bool = False) -> QueryParameter:
    """An RFC 3339 instant with an offset (`Request.instant`)."""
    schema = {"type": "string", "format": "date-time"}
    return QueryParameter(name, schema, required, description)


def choice(
    name: str, values: Sequence[str], description: str = "", *, default: str | None = None
) -> QueryParameter:
    """One of `values` (`Request.one_of`)."""
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return QueryParameter(name, schema, False, description)


def whole_number(
    name: str, description: str = "", *, minimum: int = 1, maximum: int = 1_000_000
) -> QueryParameter:
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    return QueryParameter(name, schema, False, description)


LIMIT = QueryParameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX, "default": LIMIT_DEFAULT},
    description="items per page",
)
CURSOR = QueryParameter(
    "cursor",
    {"type": "string", "minLength": 1, "maxLength": CURSOR_CHARS_MAX},
    description="the `next_cursor` of the previous page",
    code="invalid_cursor",
)
PAGE = (LIMIT, CURSOR)


# -- answers -------------------------------------------------------------------------------


class Answer:
    """A route's success answer: a pydantic model (or a union of models), through which the
    handler's reply is validated and serialized — or a hand-written JSON schema, documented
    only, for routes whose answers are written by hand for speed (ingest)."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape
        self.schema: dict[str, Any] | None = shape if isinstance(shape, dict) else None
        self.adapter: TypeAdapter[Any] | None = None if self.schema else TypeAdapter(shape)

    def dump(self, body: Any) -> Any:
        """The answer as JSON values, through its model (decimals and instants already as
        their text). An undeclared field, a missing one or a wrong type is a
        ValidationError here: a 500 and a log line, never an undocumented answer."""
        if self.adapter is None:
            return body
        shown = self.adapter.validate_python(body)
        return self.adapter.dump_python(shown, by_alias=True, exclude_unset=True)


# -- links ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """From a success answer to an operation (its operationId, `function.handler`), with
    the values it takes from the answer: `{"customer_id": "$response.body#/id"}` for
    parameters, and optionally a request body built the same way."""

    operation_id: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    request_body: Mapping[str, Any] | None = None
    description: str = ""

    @property
    def name(self) -> str:
        return self.operation_id.split(".", 1)[-1]

    def openapi(self) -> dict[str, Any]:
        link: dict[str, Any] = {"operationId": self.operation_id}
        if self.parameters:
            link["parameters"] = dict(self.parameters)
        if self.request_body is not None:
            link["requestBody"] = dict(self.request_body)
        if self.description:
            link["description"] = self.description
        return link


def body_id(name: str, operation_id: str, pointer: str = "/id") -> Link:
    """A link passing the answer's `id` (or another field) as parameter `name`."""
    return Link(operation_id, {name: f"$response.body#{pointer}"})
