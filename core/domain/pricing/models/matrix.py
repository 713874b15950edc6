"""matrix: usage grouped by the metric's group_by; each group priced by the first row
whose `match` it satisfies (every matched property equal), else `default_unit_price`,
else the usage cannot be priced (refused)."""

from __future__ import annotations

from typing import Any

from core.domain.canonical import decimal_text
from core.domain.pricing.charges import Matrix
from core.domain.pricing.priced import ZERO, Priced, PricingError, Usage, billable


def price(charge: Matrix, usage: Usage) -> Priced:
    rows: list[dict[str, Any]] = []
    total = ZERO
    for group, raw_quantity in usage.groups:
        quantity = billable(raw_quantity)
        unit_price = next(
            (
                row.unit_price
                for row in charge.prices
                if all(group.get(key) == value for key, value in row.match.items())
            ),
            charge.default_unit_price,
        )
        if unit_price is None:
            raise PricingError(
                f"no price row of charge {charge.label!r} matches group {dict(group)} "
                f"({decimal_text(quantity)} units) and it has no default_unit_price"
            )
        total += quantity * unit_price
        rows.append(
            {
                "group": dict(group),
                "quantity": quantity,
                "unit_price": unit_price,
                "amount": quantity * unit_price,
            }
        )
    return Priced(total, rows)
