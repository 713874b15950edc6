"""Reusable validated field types for definitions (pydantic, no I/O)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, StringConstraints

from core.domain.canonical import decimal_text
from core.domain.instants import to_utc
from core.domain.money import AmountError, is_currency, to_decimal


def _exact(value: Any) -> Decimal:
    try:
        return to_decimal(value)
    except AmountError as error:
        raise ValueError(str(error)) from error


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _aware_utc(value: datetime) -> datetime:
    return to_utc(value)


ExactDecimal = Annotated[
    Decimal, BeforeValidator(_exact), PlainSerializer(decimal_text, return_type=str)
]
Amount = Annotated[ExactDecimal, AfterValidator(_non_negative)]
PositiveAmount = Annotated[ExactDecimal, AfterValidator(_positive)]
Instant = Annotated[datetime, AfterValidator(_aware_utc)]

MetricKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
PlanCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")]
PropertyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]
PropertyValue = Annotated[str, StringConstraints(min_length=0, max_length=256)]
ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _currency(value: str) -> str:
    if not is_currency(value):
        raise ValueError(f"{value} is not an ISO 4217 currency")
    return value


# An ISO 4217 code that babel knows (so its minor units are known): "USD", "JPY", "BHD".
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
