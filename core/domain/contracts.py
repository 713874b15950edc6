"""Data contracts on metric versions (API.md §18): who owns a billable event's definition,
who may produce it, and what its `value` and `properties` must be.

A contract is validated when its metric version is created (an invalid JSON Schema is
`422 invalid_contract`, with where) and compiled once per version (`CompiledContract`,
jsonschema-rs: a 4-rule schema checks a valid event in well under a microsecond); ingestion
asks it `check(value, properties)` for every event of that version and gets the violations
— a JSON pointer and the rule broken, never the offending value (it may be personal data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

import jsonschema_rs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.domain.errors import FieldError, Forbidden
from core.domain.fields import ExactDecimal

TeamName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]
ProducerName = Annotated[str, StringConstraints(min_length=1, max_length=500)]
SCHEMA_BYTES_MAX = 64 * 1024
PRODUCERS_MAX = 100


class ValueRule(BaseModel):
    """Bounds and type of an event's `value` (decimal strings, exact)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["integer", "number"] = "number"
    minimum: ExactDecimal | None = None
    maximum: ExactDecimal | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ValueRule:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is above maximum")
        return self


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    owner: TeamName | None = None
    producers: Annotated[list[ProducerName], Field(max_length=PRODUCERS_MAX)] | None = None
    value: ValueRule | None = None
    properties: dict[str, Any] | None = None
    on_violation: Literal["reject", "quarantine"] = "reject"

    @field_validator("properties", mode="before")
    @classmethod
    def _exact_numbers(cls, schema: Any) -> Any:
        """Request bodies parse numbers as Decimal (money is never a float): a schema's
        numbers (`maximum: 1.5`, `multipleOf: 0.01`) become the JSON numbers they are,
        exactly, or are refused where no JSON number reads back as the same value."""
        return _json_numbers(schema)

    @field_validator("properties")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            problem = schema_problem(schema)
            if problem is not None:
                raise ValueError(f"not a valid JSON Schema (draft 2020-12): {problem}")
        return schema


def _remote_reference(schema: Any) -> str | None:
    """The first `$ref` (or `$dynamicRef`) that leaves the document, or None: a contract
    is self-contained, so checking an event never reaches the network."""
    if isinstance(schema, dict):
        for name, item in schema.items():
            if name in {"$ref", "$dynamicRef"} and not (
                isinstance(item, str) and item.startswith("#")
            ):
                return str(item)
            found = _remote_reference(item)
            if found is not None:
                return found
    elif isinstance(schema, list):
        for item in schema:
            found = _remote_reference(item)
            if found is not None:
                return found
    return None


def owner_of(versions: Sequence[Mapping[str, Any]]) -> str | None:
    """The team owning a metric: the owner its latest version's contract names."""
    return (versions[-1]["contract"] or {}).get("owner") if versions else None


def require_owner(
    scopes: frozenset[str],
    team: str | None,
    metric_key: str,
    versions: Sequence[Mapping[str, Any]],
    doing: str,
) -> None:
    """403 not_owner unless the key may change the metric (`may_change`); `doing` says
    what was refused ("add a version", "release its events", "correct its usage")."""
    owner = owner_of(versions)
    if not may_change(scopes, team, owner):
        raise Forbidden(
            f"only an admin key or a corrections:write key of team {owner!r} may {doing} "
            f"of {metric_key!r}"
            if owner
            else f"{metric_key!r} has no owning team: only admin keys {doing}",
            code="not_owner",
        )


def violation_detail(metric_key: str, version: int | None, violations: Sequence[Violation]) -> str:
    return f"the event breaks the contract of {metric_key!r} version {version}: " + "; ".join(
        f"{v.pointer} {v.message}" for v in violations[:5]
    )


def violation_errors(violations: Sequence[Violation]) -> tuple[FieldError, ...]:
    """Where (the pointer as a `loc`) and which rule (`type`), never the value."""
    return tuple(FieldError(v.location, f"{v.pointer} {v.message}", v.rule) for v in violations)


def _json_numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        number = json_number(value)
        if number is None:
            raise ValueError(f"{value} is not a number a JSON Schema can state exactly")
        return number
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    return value


def may_change(scopes: frozenset[str], team: str | None, owner: str | None) -> bool:
    """Whether a key may change a metric's contract (a new version) or correct its usage:
    an admin key, or a key with `corrections:write` of the team that owns the metric. A
    metric without an owner is changed by admins only."""
    if "admin" in scopes:
        return True
    return "corrections:write" in scopes and owner is not None and team == owner


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why `schema` is not a usable draft 2020-12 schema, or None."""
    if len(json.dumps(schema)) > SCHEMA_BYTES_MAX:
        return f"larger than {SCHEMA_BYTES_MAX} bytes"
    if schema.get("$schema") not in {None, "https://json-schema.org/draft/2020-12/schema"}:
        return "only draft 2020-12 schemas are supported ($schema)"
    remote = _remote_reference(schema)
    if remote is not None:
        return f"only references within the schema (#...) are allowed, not {remote[:100]!r}"
    try:
        jsonschema_rs.meta.validate(dict(schema))
        jsonschema_rs.Draft202012Validator(dict(schema))
    except (jsonschema_rs.ValidationError, ValueError) as error:
        return str(error).splitlines()[0]
    return None


@dataclass(frozen=True)
class Violation:
    pointer: str  # RFC 6901, from the event: /value, /properties/region
    rule: str  # the keyword broken: required, enum, pattern, type, minimum, maximum, …
    message: str

    def view(self) -> dict[str, str]:
        return {"pointer": self.pointer, "rule": self.rule, "message": self.message}

    @property
    def location(self) -> tuple[str, ...]:
        """The pointer as a problem's `loc` within the event: ("properties", "region")."""
        return tuple(
            part.replace("~1", "/").replace("~0", "~") for part in self.pointer.split("/")[1:]
        )


def _pointer(path: Sequence[str | int]) -> str:
    return "/properties" + "".join(
        "/" + str(part).replace("~", "~0").replace("/", "~1") for part in path
    )


_RULE_WORDS = re.compile(r"(?<!^)(?=[A-Z])")
# What a broken rule means, in words that never repeat the offending value.
_MESSAGES = {
    "enum": "is not one of the values the contract allows",
    "const": "is not the value the contract requires",
    "pattern": "does not match the contract's pattern",
    "type": "is not of the type the contract requires",
    "minimum": "is below the contract's minimum",
    "maximum": "is above the contract's maximum",
    "exclusiveMinimum": "is not above the contract's minimum",
    "exclusiveMaximum": "is not below the contract's maximum",
    "minLength": "is shorter than the contract allows",
    "maxLength": "is longer than the contract allows",
    "additionalProperties": "has properties the contract does not allow",
    "format": "is not in the format the contract requires",
}


class CompiledContract:
    """A contract ready to check events (one per metric version, built once)."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self._validator = (
            None
            if contract.properties is None
            else jsonschema_rs.Draft202012Validator(contract.properties)
        )
        self._producers = None if contract.producers is None else frozenset(contract.producers)
        rule = contract.value
        self._minimum = None if rule is None else rule.minimum
        self._maximum = None if rule is None else rule.maximum
        self._integer = rule is not None and rule.type == "integer"

    def passes(self, value: Decimal, properties: Mapping[str, Any]) -> bool:
        """Whether the event meets the contract: the per-event fast path (no violation is
        described unless one is found: `check`)."""
        if self._minimum is not None and value < self._minimum:
            return False
        if self._maximum is not None and value > self._maximum:
            return False
        if self._integer and value != value.to_integral_value():
            return False
        return self._validator is None or self._validator.is_valid(properties)

    @property
    def quarantines(self) -> bool:
        return self.contract.on_violation == "quarantine"

    def producer_allowed(self, producer: str | None) -> bool:
        return self._producers is None or (producer is not None and producer in self._producers)

    def check(self, value: Decimal, properties: Mapping[str, Any]) -> list[Violation]:
        found = self._value(value)
        if self._validator is not None and not self._validator.is_valid(properties):
            for error in self._validator.iter_errors(properties):
                keyword = error.schema_path[-1] if error.schema_path else None
                rule = (
                    keyword
                    if isinstance(keyword, str)
                    else _RULE_WORDS.sub("_", type(error.kind).__name__).lower()
                )
                path = list(error.instance_path)
                if rule == "required":
                    missing = getattr(error.kind, "property", "")
                    path.append(str(missing))
                    message = "is required"
                else:
                    message = _MESSAGES.get(rule, f"breaks the schema's {rule!r} rule")
                found.append(Violation(_pointer(path), rule, message))
        return found

    def _value(self, value: Decimal) -> list[Violation]:
        rule = self.contract.value
        if rule is None:
            return []
        found = []
        if rule.type == "integer" and value != value.to_integral_value():
            found.append(Violation("/value", "type", "must be an integer"))
        if rule.minimum is not None and value < rule.minimum:
            found.append(Violation("/value", "minimum", f"must be at least {rule.minimum}"))
        if rule.maximum is not None and value > rule.maximum:
            found.append(Violation("/value", "maximum", f"must be at most {rule.maximum}"))
        return found


def json_number(value: Decimal) -> int | float | None:
    """`value` as a JSON number that reads back exactly (an int, or a float whose shortest
    text is the decimal's own), else None: a schema bound is never rounded. Only for the
    documents a contract publishes (JSON Schema, ODCS), which JSON can only write as
    numbers; contracts check events with the exact Decimals."""
    if value == value.to_integral_value():
        return int(value)
    candidate = float(value)
    return candidate if Decimal(repr(candidate)) == value else None


def event_schema(metric_key: str, version: int, contract: Contract | None) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a whole event of this metric version: what a producer
    validates before sending (a CloudEvent may name it in `dataschema`)."""
    value: dict[str, Any] = {"type": ["number", "string"], "description": "exact decimal"}
    if contract is not None and contract.value is not None:
        rule = contract.value
        value = {"type": "integer" if rule.type == "integer" else "number"}
        for bound, limit in (("minimum", rule.minimum), ("maximum", rule.maximum)):
            number = None if limit is None else json_number(limit)
            if number is not None:
                value[bound] = number
            elif limit is not None:  # not exactly a JSON number a parser reads back: said
                value["description"] = f"{bound} {limit} (checked exactly by ABAXUS)"
    properties = (
        contract.properties
        if contract is not None and contract.properties is not None
        else {"type": "object"}
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:abaxus:metric:{metric_key}:v{version}",
        "title": f"A usage event of {metric_key}, version {version}",
        "type": "object",
        "required": ["customer_id", "metric_key", "timestamp", "idempotency_key"],
        "additionalProperties": False,
        "properties": {
            "customer_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
            "metric_key": {"const": metric_key},
            "value": value,
            "timestamp": {"type": "string", "format": "date-time"},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255},
            "properties": properties,
        },
    }


_LOGICAL_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}


def _odcs_property(name: str, schema: Mapping[str, Any], required: bool) -> dict[str, Any]:
    """One property of an event's `properties` as an ODCS SchemaProperty."""
    found: dict[str, Any] = {"name": name, "required": required}
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _LOGICAL_TYPES:
        found["logicalType"] = _LOGICAL_TYPES[kind]
    if "enum" in schema and isinstance(schema["enum"], list):
        found["logicalType"] = found.get("logicalType", "string")
        found["examples"] = list(schema["enum"])
    options = {
        option: schema[option]
        for option in ("pattern", "minLength", "maxLength", "minimum", "maximum", "format")
        if option in schema
    }
    if options:
        found["logicalTypeOptions"] = options
    if "description" in schema:
        found["description"] = str(schema["description"])
    return found


def odcs_document(
    *,
    metric_key: str,
    name: str,
    unit: str,
    version: int,
    contract: Contract | None,
    archived: bool,
    schema_url: str,
) -> dict[str, Any]:
    """The metric's contract in force as an Open Data Contract Standard (v3.0.2) document:
    the event's fields as one schema object, the owner as the team, the rest (producers,
    on_violation, the JSON Schema's address) as custom properties."""
    value: dict[str, Any] = {
        "name": "value",
        "logicalType": "number",
        "required": False,
        "description": f"the quantity, in {unit}s (exact decimal; 1 when absent)",
    }
    if contract is not None and contract.value is not None:
        rule = contract.value
        value["logicalType"] = rule.type
        options: dict[str, int | float] = {}
        for bound, limit in (("minimum", rule.minimum), ("maximum", rule.maximum)):
            number = None if limit is None else json_number(limit)
            if number is not None:
                options[bound] = number
            elif limit is not None:  # not exactly a JSON number: said, never rounded
                value["description"] += f"; {bound} {limit}"
        if options:
            value["logicalTypeOptions"] = options
    schema = (contract.properties if contract is not None else None) or {}
    required = set(schema.get("required", []))
    nested = [
        _odcs_property(key, item if isinstance(item, Mapping) else {}, key in required)
        for key, item in sorted((schema.get("properties") or {}).items())
    ]
    nested += [
        {"name": key, "required": True}
        for key in sorted(required - set(schema.get("properties") or {}))
    ]
    properties: dict[str, Any] = {
        "name": "properties",
        "logicalType": "object",
        "required": bool(required),
        "description": "the event's dimensions, checked against the contract's JSON Schema",
    }
    if nested:
        properties["properties"] = nested
    custom: list[dict[str, Any]] = [
        {"property": "abaxusJsonSchema", "value": schema_url},
        {
            "property": "abaxusOnViolation",
            "value": contract.on_violation if contract is not None else "accept",
        },
    ]
    if contract is not None and contract.producers is not None:
        custom.append({"property": "abaxusProducers", "value": list(contract.producers)})
    document: dict[str, Any] = {
        "apiVersion": "v3.0.2",
        "kind": "DataContract",
        "id": f"urn:abaxus:metric:{metric_key}",
        "name": name,
        "version": f"{version}.0.0",
        "status": "retired" if archived else "active",
        "domain": "usage",
        "description": {
            "purpose": f"Usage events of {metric_key} ({name}), billed by ABAXUS",
            "usage": "POST /v1/events (or a dev.abaxus.usage.reported.v1 CloudEvent); "
            "events that break the contract are refused or quarantined",
        },
        "schema": [
            {
                "name": metric_key,
                "physicalName": "events",
                "physicalType": "table",
                "logicalType": "object",
                "description": f"one usage event of {metric_key}",
                "properties": [
                    {"name": "customer_id", "logicalType": "string", "required": True},
                    {"name": "metric_key", "logicalType": "string", "required": True},
                    value,
                    {"name": "timestamp", "logicalType": "date", "required": True},
                    {
                        "name": "idempotency_key",
                        "logicalType": "string",
                        "required": True,
                        "unique": True,
                    },
                    properties,
                ],
            }
        ],
        "customProperties": custom,
    }
    if contract is not None and contract.owner is not None:
        document["team"] = [{"username": contract.owner, "role": "owner"}]
    return document
