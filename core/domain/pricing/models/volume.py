"""volume: every unit at the price of the tier the total falls in (the first tier whose
inclusive `up_to` is >= the quantity; the first tier at 0), plus that tier's flat fee."""

from __future__ import annotations

from core.domain.pricing.charges import Volume
from core.domain.pricing.priced import ZERO, Priced, Usage, billable


def price(charge: Volume, usage: Usage) -> Priced:
    quantity = billable(usage.quantity)
    lower = ZERO
    for tier in charge.tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            amount = quantity * tier.unit_price + tier.flat_fee
            row = {
                "from": lower,
                "to": tier.up_to,
                "quantity": quantity,
                "unit_price": tier.unit_price,
                "flat_fee": tier.flat_fee,
                "amount": amount,
            }
            return Priced(amount, [row])
        lower = tier.up_to
    raise AssertionError("the last tier is open-ended")  # pragma: no cover - validated ladder
