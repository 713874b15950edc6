"""The building blocks of every answer: exact numbers as text, instants as RFC 3339 UTC,
periods, and cursor pages (docs/concepts.md, "Numbers in responses" and "Canonical JSON")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from core.domain.canonical import decimal_text, rfc3339

# What `decimal_text` writes: fixed-point, no exponent, no trailing zeros, no "-0".
DECIMAL_TEXT_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
CHECKSUM_PATTERN = r"^sha256:[0-9a-f]{64}$"

DecimalText = Annotated[
    Decimal,
    PlainSerializer(decimal_text, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DECIMAL_TEXT_PATTERN,
            "description": "an exact decimal as text: fixed-point, no trailing zeros",
        },
        mode="serialization",
    ),
]
"""Money, prices and quantities: validated as an exact Decimal, answered as its text."""

InstantText = Annotated[
    datetime,
    PlainSerializer(rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]
"""An instant, answered as RFC 3339 in UTC with `Z` (microseconds only when not zero)."""

Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN)]
Checksum = Annotated[str, Field(pattern=CHECKSUM_PATTERN)]

Item = TypeVar("Item")


class ResponseModel(BaseModel):
    """An answer's shape: undeclared fields are refused; `from` and other reserved words
    are fields with an alias, answered under the alias."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True)


class Period(ResponseModel):
    """A half-open interval [start, end)."""

    start: InstantText
    end: InstantText


class Page(ResponseModel, Generic[Item]):
    """A list: at most `limit` items, and the cursor of the next page (null on the last)."""

    data: list[Item]
    next_cursor: str | None
