"""per_unit: quantity x unit_price."""

from __future__ import annotations

from core.domain.pricing.charges import PerUnit
from core.domain.pricing.priced import ZERO, Priced, Usage, billable


def price(charge: PerUnit, usage: Usage) -> Priced:
    quantity = billable(usage.quantity)
    amount = quantity * charge.unit_price
    row = {
        "from": ZERO,
        "to": None,
        "quantity": quantity,
        "unit_price": charge.unit_price,
        "flat_fee": ZERO,
        "amount": amount,
    }
    return Priced(amount, [row])
