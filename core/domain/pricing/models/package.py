"""package: ceil(max(0, quantity - free_units) / package_size) x package_price."""

from __future__ import annotations

from decimal import ROUND_CEILING

from core.domain.pricing.charges import Package
from core.domain.pricing.priced import ZERO, Priced, Usage, billable


def price(charge: Package, usage: Usage) -> Priced:
    quantity = billable(usage.quantity)
    chargeable = max(ZERO, quantity - charge.free_units)
    packages = (chargeable / charge.package_size).to_integral_value(rounding=ROUND_CEILING)
    amount = packages * charge.package_price
    row = {
        "quantity": quantity,
        "free_units": charge.free_units,
        "billable_units": chargeable,
        "package_size": charge.package_size,
        "packages": packages,
        "package_price": charge.package_price,
        "amount": amount,
    }
    return Priced(amount, [row])
