"""Exact amounts and quantities: what fits NUMERIC(20,10), and currencies' minor units."""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from babel.numbers import get_currency_precision, list_currencies

# NUMERIC(20,10): 10 digits before the point, 10 after.
SCALE_MAX = 10
INTEGER_DIGITS_MAX = 10
MAGNITUDE_LIMIT = Decimal(10) ** INTEGER_DIGITS_MAX
MAGNITUDE_INT = 10**INTEGER_DIGITS_MAX
DIGITS_MAX = 64  # of a number as sent (trailing zeros count): far more than an amount needs


class AmountError(ValueError):
    """A number that is not an exact amount ABAXUS can store."""


def to_decimal(value: Any) -> Decimal:
    """A JSON number (int or Decimal, never float) or a numeric string, as an exact
    Decimal that fits NUMERIC(20,10)."""
    if type(value) is int and -MAGNITUDE_INT < value < MAGNITUDE_INT:  # the usual count
        return Decimal(value)
    if isinstance(value, bool | float):
        raise AmountError("must be an exact number (a JSON number or a string), not a float")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str) and value.strip() == value and value:
        try:
            number = Decimal(value)
        except InvalidOperation as error:
            raise AmountError("is not a number") from error
    else:
        raise AmountError("must be a number or a numeric string")
    if not number.is_finite():
        raise AmountError("NaN and Infinity are not amounts")
    # Bounded before any arithmetic: digits and magnitude are read off the representation
    # (abs() or quantize() of a number beyond the context's limits would itself raise).
    _sign, digits, exponent = number.as_tuple()
    if len(digits) > DIGITS_MAX:
        raise AmountError(f"at most {DIGITS_MAX} digits")
    if not number:
        return Decimal(0)  # 0E+5000000 is zero: stored as such
    if number.adjusted() >= INTEGER_DIGITS_MAX:
        raise AmountError(f"must be smaller than 10^{INTEGER_DIGITS_MAX} in magnitude")
    assert isinstance(exponent, int)
    if -exponent > SCALE_MAX and number != number.quantize(Decimal(1).scaleb(-SCALE_MAX)):
        raise AmountError(f"at most {SCALE_MAX} decimal places")
    return number


@functools.lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    return frozenset(code for code in list_currencies() if len(code) == 3 and code.isupper())


def is_currency(code: str) -> bool:
    return code in _currencies()


def minor_units(currency: str) -> int:
    """ISO 4217 exponent: USD 2, JPY 0, BHD 3."""
    if not is_currency(currency):
        raise AmountError(f"unknown currency {currency!r}")
    return int(get_currency_precision(currency))


def round_to_currency(amount: Decimal, currency: str) -> Decimal:
    """The one rounding boundary for money: half-up to the currency's minor units."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)
