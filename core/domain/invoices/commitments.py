"""The commitments step of invoice assembly (after usage and fees, before discounts):
a subscription's `minimum_commitment` and `maximum_charge` per billing period (API.md §11).

The commitment applies to the period's charges — its usage and fee lines, not the
adjustments of earlier periods the invoice carries. Both amounts are prorated for a
partial period by the days the flat fees bill (`billed_days / period_days`: the days the
subscription covered outside a trial), rounded half-up to the currency's minor units:

- `minimum_commitment` true-up: `max(0, minimum - charges)`, a positive line;
- `maximum_charge` cap: `-max(0, charges - maximum)`, a negative line.

So the period's charges after this step are `min(max(charges, minimum), maximum)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.domain.canonical import decimal_text
from core.domain.money import round_to_currency

ZERO = Decimal(0)


@dataclass(frozen=True)
class Commitment:
    """A period's commitment as its calculation states it."""

    minimum: Decimal | None
    maximum: Decimal | None
    period_days: int
    billed_days: int

    @classmethod
    def of(cls, stated: Mapping[str, Any] | None) -> Commitment | None:
        if not stated:
            return None
        return cls(
            minimum=None if stated.get("minimum") is None else Decimal(str(stated["minimum"])),
            maximum=None if stated.get("maximum") is None else Decimal(str(stated["maximum"])),
            period_days=int(stated["period_days"]),
            billed_days=int(stated["billed_days"]),
        )

    def prorated(self, amount: Decimal, currency: str) -> Decimal:
        if self.period_days <= 0 or self.billed_days >= self.period_days:
            return amount
        return round_to_currency(amount * self.billed_days / self.period_days, currency)

    def proration(self) -> str:
        if self.billed_days >= self.period_days:
            return ""
        return f", prorated for {self.billed_days} of {self.period_days} days"


def commitment_lines(
    charges: Decimal, commitment: Commitment | None, currency: str
) -> list[dict[str, Any]]:
    """The true-up and cap lines for a period whose charges add up to `charges`."""
    if commitment is None:
        return []
    found = []
    if commitment.minimum is not None:
        minimum = commitment.prorated(commitment.minimum, currency)
        if charges < minimum:
            found.append(
                {
                    "type": "commitment",
                    "kind": "minimum_commitment",
                    "description": f"Minimum commitment {decimal_text(minimum)} {currency} "
                    f"per period{commitment.proration()}: true-up",
                    "commitment": decimal_text(minimum),
                    "amount": decimal_text(minimum - charges),
                }
            )
    if commitment.maximum is not None:
        maximum = commitment.prorated(commitment.maximum, currency)
        if charges > maximum:
            found.append(
                {
                    "type": "commitment",
                    "kind": "maximum_charge",
                    "description": f"Maximum charge {decimal_text(maximum)} {currency} "
                    f"per period{commitment.proration()}: cap",
                    "commitment": decimal_text(maximum),
                    "amount": decimal_text(-(charges - maximum)),
                }
            )
    return found
