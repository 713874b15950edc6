"""What an invoice says to the person who reads it: amounts in the currency's minor units,
dates as dates, the period as its first and last day, and every pricing breakdown as a
table or a sentence. Pure: it takes the invoice as the API shows it (`invoicing.view`,
numbers as decimal strings, instants as RFC 3339 text) and returns strings; the templates
in core/templates/ only lay them out.

Rules (one place for each):
- an amount is rounded half-up to the currency's minor units (USD 2, JPY 0, BHD 3) with
  `money.round_to_currency`, then grouped by Babel ("1,234.50"); Babel's own rounding
  (half-even) never runs, since the value reaches it already at that scale;
- a price, a quantity and every figure of a breakdown are shown exactly as stored (a unit
  price of 0.00125 stays 0.00125), padded to at least the currency's minor units; past
  `EXACT_PLACES_MAX` places (a prorated third) it is rounded half-up there and marked "≈";
- a date is the UTC calendar date, "5 December 2026"; a period [start, end) is shown as
  its first and last day (end is exclusive: [1 June, 1 July) is 1 June to 30 June).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from babel.dates import format_date as babel_date
from babel.numbers import format_decimal

from core.domain.money import SCALE_MAX, minor_units, round_to_currency

LOCALE = "en"  # documents are written in English; numbers grouped the English way
DATE_PATTERN = "d MMMM y"  # 5 December 2026
EXACT_PLACES_MAX = SCALE_MAX  # what NUMERIC(20,10) stores: more places is a computed ratio
OPEN_END = "∞"  # the last tier's "to"
PERIOD_DASH = "\u2013"  # an en dash between the first and the last day
NO_VALUE = "—"


def decimal_of(value: Any) -> Decimal:
    """An exact number from the API's JSON (a decimal string, an int or a Decimal)."""
    if isinstance(value, bool | float) or value is None:
        raise TypeError(f"not an exact number: {value!r}")
    return Decimal(str(value))


def _grouped(value: Decimal, places: int) -> str:
    """`value`, which has at most `places` decimal places, with thousands separators."""
    assert value == value.quantize(Decimal(1).scaleb(-places)), (value, places)
    pattern = "#,##0" + ("." + "0" * places if places else "")
    return format_decimal(value, format=pattern, locale=LOCALE)


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return max(0, -exponent)


def format_amount(amount: Any, currency: str) -> str:
    """Money as billed: half-up to the currency's minor units, grouped ("1,234.50")."""
    return _grouped(round_to_currency(decimal_of(amount), currency), minor_units(currency))


def format_exact(value: Any, minimum_places: int = 0) -> str:
    """A number as stored (at least `minimum_places` places), grouped; past
    EXACT_PLACES_MAX places rounded half-up there and marked "≈"."""
    exact = decimal_of(value)
    places = _places(exact)
    if places > EXACT_PLACES_MAX:
        rounded = exact.quantize(Decimal(1).scaleb(-EXACT_PLACES_MAX), rounding=ROUND_HALF_UP)
        return "≈ " + _grouped(rounded, max(_places(rounded), minimum_places))
    return _grouped(exact, max(places, minimum_places))


def format_price(value: Any, currency: str) -> str:
    """A price or an unrounded amount: exact, at least the currency's minor units."""
    return format_exact(value, minor_units(currency))


def instant(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every instant in ABAXUS carries a UTC offset")
    return moment.astimezone(UTC)


def format_day(day: date) -> str:
    return babel_date(day, format=DATE_PATTERN, locale=LOCALE)


def format_date(value: datetime | str | None) -> str | None:
    """The UTC calendar date of an instant, "5 December 2026"; None stays None."""
    return None if value is None else format_day(instant(value).date())


def period_days(start: datetime | str, end: datetime | str) -> tuple[date, date]:
    """The first and last calendar day of [start, end): the last is the day of the last
    instant before `end` (a period ending at midnight ends the day before)."""
    first = instant(start)
    last = instant(end) - timedelta(microseconds=1)
    return first.date(), max(first, last).date()


def format_period(start: datetime | str, end: datetime | str) -> str:
    first, last = period_days(start, end)
    return f"{format_day(first)} {PERIOD_DASH} {format_day(last)}"


@dataclass(frozen=True)
class Table:
    """A readable table: headers, which columns hold numbers (right-aligned), rows."""

    headers: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Breakdown:
    """How a line's amount comes about: sentences, and a table where one reads better."""

    notes: tuple[str, ...] = ()
    table: Table | None = None


Rows = Sequence[Mapping[str, Any]]


def _tiers(rows: Rows, currency: str, note: str) -> Breakdown:
    table = Table(
        headers=("From", "To", "Units", "Unit price", "Flat fee", "Amount"),
        numeric=(True,) * 6,
        rows=tuple(
            (
                format_exact(row["from"]),
                OPEN_END if row["to"] is None else format_exact(row["to"]),
                format_exact(row["quantity"]),
                format_price(row["unit_price"], currency),
                format_price(row["flat_fee"], currency),
                format_price(row["amount"], currency),
            )
            for row in rows
        ),
    )
    return Breakdown((note,), table)


def _tiered(rows: Rows, currency: str) -> Breakdown:
    return _tiers(rows, currency, "Graduated: each unit is priced in the tier it falls in.")


def _volume(rows: Rows, currency: str) -> Breakdown:
    return _tiers(rows, currency, "Volume: every unit at the price of the tier the total is in.")


def _per_unit(rows: Rows, currency: str) -> Breakdown:
    (row,) = rows
    units, price = format_exact(row["quantity"]), format_price(row["unit_price"], currency)
    return Breakdown((f"{units} units at {price} each.",))


def _package(rows: Rows, currency: str) -> Breakdown:
    (row,) = rows
    return Breakdown(
        (
            f"{format_exact(row['quantity'])} units, {format_exact(row['free_units'])} free: "
            f"{format_exact(row['billable_units'])} billable units in packages of "
            f"{format_exact(row['package_size'])} = {format_exact(row['packages'])} "
            f"packages at {format_price(row['package_price'], currency)}.",
        )
    )


def _flat_fee(rows: Rows, currency: str) -> Breakdown:
    (row,) = rows
    if row["covered_days"] >= row["period_days"] or not row["period_days"]:
        return Breakdown()
    return Breakdown(
        (
            f"{format_price(row['amount_per_period'], currency)} per period, prorated for "
            f"{row['covered_days']} of {row['period_days']} days.",
        )
    )


def _matrix(rows: Rows, currency: str) -> Breakdown:
    def group(values: Mapping[str, Any]) -> str:
        shown = ", ".join(f"{k}: {NO_VALUE if v is None else v}" for k, v in values.items())
        return shown or "(all usage)"

    table = Table(
        headers=("Group", "Units", "Unit price", "Amount"),
        numeric=(False, True, True, True),
        rows=tuple(
            (
                group(row["group"]),
                format_exact(row["quantity"]),
                format_price(row["unit_price"], currency),
                format_price(row["amount"], currency),
            )
            for row in rows
        ),
    )
    return Breakdown(("Each usage group at the price of the first row it matches.",), table)


def _custom_formula(rows: Rows, currency: str) -> Breakdown:
    (row,) = rows
    return Breakdown(
        (
            f"Formula {row['formula']} with quantity = {format_exact(row['quantity'])} and "
            f"period_days = {row['period_days']}.",
        )
    )


def _as_stored(rows: Rows) -> Breakdown:
    """A model this module does not know yet: every field of every row, as stored."""
    keys = tuple(dict.fromkeys(key for row in rows for key in row))
    table = Table(
        headers=tuple(key.replace("_", " ").capitalize() for key in keys),
        numeric=(False,) * len(keys),
        rows=tuple(tuple(str(row.get(key, "")) for key in keys) for row in rows),
    )
    return Breakdown(table=table)


# One entry per pricing model (core/domain/pricing/engine.REGISTRY), each reading exactly
# the rows its model writes (core/domain/pricing/models/).
READABLE: Mapping[str, Callable[[Rows, str], Breakdown]] = {
    "per_unit": _per_unit,
    "tiered": _tiered,
    "volume": _volume,
    "package": _package,
    "flat_fee": _flat_fee,
    "matrix": _matrix,
    "custom_formula": _custom_formula,
}


def breakdown(model: str, rows: Rows, currency: str, *, unrounded: Any, amount: Any) -> Breakdown:
    """A usage line's breakdown made readable; when the exact amount has more places than
    the currency, a note says how it was rounded."""
    readable = READABLE.get(model)
    if not rows:
        made = Breakdown()
    elif readable is None:
        made = _as_stored(rows)
    else:
        made = readable(rows, currency)
    if unrounded is not None and decimal_of(unrounded) != decimal_of(amount):
        rounding = (
            f"Exact amount {format_price(unrounded, currency)}, rounded half-up to "
            f"{format_amount(amount, currency)}."
        )
        made = Breakdown((*made.notes, rounding), made.table)
    return made


def text_table(table: Table, indent: str = "") -> tuple[str, ...]:
    """The table as aligned plain-text lines (numbers right-aligned), for the email."""
    widths = [
        max(len(cell) for cell in column) for column in zip(table.headers, *table.rows, strict=True)
    ]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if numeric else cell.ljust(width)
            for cell, width, numeric in zip(cells, widths, table.numeric, strict=True)
        )
        return (indent + "  ".join(padded)).rstrip()

    return (line(table.headers), *(line(row) for row in table.rows))
