"""Late usage: what an issued invoice's period is still missing, per charge.

The difference is always *re-priced minus billed*, where billed is what the period's
binding invoice's lines say plus every late-usage adjustment (and reversal) already
recorded for the period, cancelled ones excepted. So it is idempotent: computed twice, or
after a failure, it records exactly what is still missing, never a unit twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.domain.canonical import decimal_text

ZERO = Decimal(0)
MONTH_DAYS_MAX = 31


@dataclass(frozen=True)
class Billed:
    quantity: Decimal = ZERO
    amount: Decimal = ZERO


@dataclass(frozen=True)
class Difference:
    charge: str  # charge_key: "<charge label>#<meter version>"
    metric_key: str
    meter_version: int | None
    quantity: Decimal
    amount: Decimal


def charge_key(line: Mapping[str, Any]) -> str:
    return f"{line['charge']}#{line['meter_version']}"


def differences(
    repriced: Sequence[Mapping[str, Any]],
    invoiced: Sequence[Mapping[str, Any]],
    adjusted: Mapping[str, Billed],
    metric_key: str,
) -> list[Difference]:
    """Per usage line of `metric_key` in the re-priced period: re-priced - invoiced -
    already adjusted; lines with nothing missing are left out."""
    billed = {charge_key(line): line for line in invoiced if line.get("metric_key") is not None}
    found = []
    for line in repriced:
        if line["metric_key"] != metric_key:
            continue
        key = charge_key(line)
        before = billed.get(key)
        prior = adjusted.get(key, Billed())
        quantity = (
            Decimal(str(line["quantity"]))
            - Decimal(str(before["quantity"] if before else 0))
            - prior.quantity
        )
        amount = (
            Decimal(str(line["amount"]))
            - Decimal(str(before["amount"] if before else 0))
            - prior.amount
        )
        if quantity != 0 or amount != 0:
            found.append(Difference(key, metric_key, line["meter_version"], quantity, amount))
    return found


def period_label(start: datetime, end: datetime) -> str:
    """'June 2026' for a calendar month, else '2026-06-10 to 2026-07-10'."""
    first = start.astimezone(UTC)
    if (first.day, first.hour, first.minute, first.second) == (1, 0, 0, 0) and (
        end - start
    ) <= timedelta(days=MONTH_DAYS_MAX):
        return first.strftime("%B %Y")
    return f"{first:%Y-%m-%d} to {end.astimezone(UTC):%Y-%m-%d}"


def description(
    label: str, invoice_number: str | None, difference: Difference, *, correction: str | None = None
) -> str:
    sign = "+" if difference.quantity >= 0 else ""
    change = f"{difference.metric_key} {sign}{decimal_text(difference.quantity)}"
    cause = "Late usage" if correction is None else f"Correction {correction}"
    return f"{cause} for {label} ({invoice_number}): {change}"
