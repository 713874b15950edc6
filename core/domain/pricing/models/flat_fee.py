"""flat_fee: `amount` per period, prorated by days when the subscription covers only part
of the period: amount x covered_days / period_days, where a day is 24 hours of elapsed
time and a started day counts in full (docs/concepts.md)."""

from __future__ import annotations

from decimal import Decimal

from core.domain.pricing.charges import FlatFee
from core.domain.pricing.priced import Priced, Usage


def price(charge: FlatFee, usage: Usage) -> Priced:
    full = usage.covered_days >= usage.period_days or usage.period_days == 0
    factor = Decimal(1) if full else Decimal(usage.covered_days) / Decimal(usage.period_days)
    amount = charge.amount * factor
    row = {
        "amount_per_period": charge.amount,
        "covered_days": usage.covered_days,
        "period_days": usage.period_days,
        "amount": amount,
    }
    return Priced(amount, [row])
