"""The discounts step of invoice assembly (after commitments, before taxes): a
subscription's discounts in force for the period, each a negative line (API.md §12).

What a discount applies to: the period's charges after commitments (usage and fee lines,
true-up and cap), not the adjustments of earlier periods the invoice carries. A discount
restricted to metrics applies to those metrics' usage lines only.

Stacking: discounts apply one after the other, in the order they were redeemed; each
applies to what the earlier ones left. A percentage is of that remainder, rounded half-up
to the currency's minor units; a fixed amount takes at most that remainder. So no discount
takes a line (a restricted one: the metrics' lines; any: the period's charges) below zero,
and the period's charges after discounts are never negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.domain.canonical import decimal_text
from core.domain.money import round_to_currency

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class AppliedDiscount:
    """A discount in force for the invoice's period."""

    id: str
    coupon_code: str
    name: str
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    metric_keys: tuple[str, ...] | None = None  # None: every charge of the period

    def describe(self, currency: str) -> str:
        off = (
            f"{decimal_text(self.percent_off)}% off"
            if self.percent_off is not None
            else f"{decimal_text(self.amount_off or ZERO)} {currency} off"
        )
        scope = f" {', '.join(self.metric_keys)}" if self.metric_keys else ""
        return f"{self.name} ({off}{scope})"


def discount_lines(
    period_lines: Sequence[dict[str, Any]],
    discounts: Sequence[AppliedDiscount],
    currency: str,
) -> list[dict[str, Any]]:
    """The discount lines for the period's charge lines (usage, fee and commitment lines)."""
    remaining = max(sum((Decimal(str(line["amount"])) for line in period_lines), ZERO), ZERO)
    by_metric: dict[str, Decimal] = {}
    for line in period_lines:
        key = line.get("metric_key")
        if line.get("type") == "usage" and key is not None:
            by_metric[key] = by_metric.get(key, ZERO) + Decimal(str(line["amount"]))
    found = []
    for discount in discounts:
        keys = discount.metric_keys
        base = remaining
        if keys is not None:
            base = min(base, sum((max(by_metric.get(k, ZERO), ZERO) for k in keys), ZERO))
        if discount.percent_off is not None:
            amount = round_to_currency(base * discount.percent_off / HUNDRED, currency)
        else:
            amount = discount.amount_off or ZERO
        amount = min(amount, base)
        if amount <= 0:
            continue
        remaining -= amount
        if keys is not None:
            _take(by_metric, keys, amount)
        found.append(
            {
                "type": "discount",
                "discount_id": discount.id,
                "coupon_code": discount.coupon_code,
                "description": discount.describe(currency),
                "metric_keys": list(keys) if keys is not None else None,
                "amount": decimal_text(-amount),
            }
        )
    return found


def _take(by_metric: dict[str, Decimal], keys: Sequence[str], amount: Decimal) -> None:
    """What a restricted discount took, from its metrics' lines in the order it names them."""
    for key in keys:
        taken = min(max(by_metric.get(key, ZERO), ZERO), amount)
        by_metric[key] = by_metric.get(key, ZERO) - taken
        amount -= taken
