"""Late usage: what an issued invoice's period is still missing, per charge.

The difference is always *re-priced minus billed*, where billed is what the period's
binding invoice's lines say plus every late-usage adjustment (and reversal) already
recorded for the period, cancelled ones excepted. So it is idempotent: computed twice, or
after a failure, it records exactly what is still missing, never a unit twice.

The period's commitment and discounts apply to its late usage too (`terms_difference`):
the commitments and discounts steps are run again over the period's charges as billed
after the differences, and what they give beyond what the invoice and earlier
adjustments already applied is one more difference, under the charge key `TERMS_KEY`. So
late usage under a minimum commitment is absorbed by it, above a maximum it is capped,
and a percentage discount of the period applies to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.domain.canonical import decimal_text
from core.domain.invoices.commitments import Commitment, commitment_lines
from core.domain.invoices.discounts import AppliedDiscount, discount_lines

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


TERMS_KEY = (
    "#terms"  # the charge key of commitment and discount differences (no label starts with #)
)
TERM_LINES = frozenset({"commitment", "discount"})


def terms_difference(
    invoiced: Sequence[Mapping[str, Any]],
    adjusted: Mapping[str, Billed],
    found: Sequence[Difference],
    *,
    currency: str,
    commitment: Commitment | None,
    discounts: Sequence[AppliedDiscount],
) -> Decimal:
    """What the period's commitment and discounts change once `found` is billed: the
    terms over the period's usage as billed after it, minus the term lines the invoice
    has, minus earlier term differences."""
    amounts: dict[str, Decimal] = {}
    metrics: dict[str, str | None] = {}
    for line in invoiced:
        if line.get("type") == "usage":
            key = charge_key(line)
            amounts[key] = amounts.get(key, ZERO) + Decimal(str(line["amount"]))
            metrics[key] = line.get("metric_key")
    for key, prior in adjusted.items():
        if key != TERMS_KEY:
            amounts[key] = amounts.get(key, ZERO) + prior.amount
    for difference in found:
        amounts[difference.charge] = amounts.get(difference.charge, ZERO) + difference.amount
        metrics[difference.charge] = difference.metric_key
    usage: list[dict[str, Any]] = [
        {"type": "usage", "metric_key": metrics.get(key), "amount": amount}
        for key, amount in amounts.items()
    ]
    total = sum(amounts.values(), ZERO)
    terms = commitment_lines(total, commitment, currency)
    terms += discount_lines([*usage, *terms], discounts, currency)
    now = sum((Decimal(str(line["amount"])) for line in terms), ZERO)
    billed = sum(
        (Decimal(str(line["amount"])) for line in invoiced if line.get("type") in TERM_LINES),
        ZERO,
    )
    return now - billed - adjusted.get(TERMS_KEY, Billed()).amount


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
