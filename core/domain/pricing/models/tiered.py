"""tiered (graduated): each unit priced in the tier it falls in, plus the flat fee of every
tier reached. The first tier is always reached (even at quantity 0); tier k is reached
when the quantity exceeds tier k-1's inclusive `up_to`. Fractional quantities split at
the boundary (tiers up to 100 and 200: 100.5 = 100 + 0.5)."""

from __future__ import annotations

from typing import Any

from core.domain.pricing.charges import Tiered
from core.domain.pricing.priced import ZERO, Priced, Usage, billable


def price(charge: Tiered, usage: Usage) -> Priced:
    quantity = billable(usage.quantity)
    rows: list[dict[str, Any]] = []
    total = ZERO
    lower = ZERO
    for index, tier in enumerate(charge.tiers):
        if index > 0 and quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = max(ZERO, upper - lower)
        total += units * tier.unit_price + tier.flat_fee
        rows.append(
            {
                "from": lower,
                "to": tier.up_to,
                "quantity": units,
                "unit_price": tier.unit_price,
                "flat_fee": tier.flat_fee,
                "amount": units * tier.unit_price + tier.flat_fee,
            }
        )
        if tier.up_to is None:
            break
        lower = tier.up_to
    return Priced(total, rows)
