"""What every pricing model returns: an amount at full precision and the breakdown rows
that make it up (tiers, packages, groups), and what it prices: the usage of one charge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)


@dataclass(frozen=True)
class Usage:
    """A charge's usage in a period. `quantity` is what the meter counted; `groups` the
    quantity per group of the metric's group_by (matrix), as (group dict, quantity)."""

    quantity: Decimal = ZERO
    groups: tuple[tuple[Mapping[str, str | None], Decimal], ...] = ()
    period_days: int = 0
    covered_days: int = 0


@dataclass(frozen=True)
class Priced:
    amount: Decimal
    breakdown: list[dict[str, Any]] = field(default_factory=list)


class PricingError(ValueError):
    """Usage that a charge cannot price (a matrix group no row matches, a formula that
    divides by zero): the calculation is refused, never guessed."""

    def __init__(self, message: str, code: str = "unpriceable_usage") -> None:
        super().__init__(message)
        self.code = code


def billable(quantity: Decimal) -> Decimal:
    """Negative net usage is billed as none (corrections are adjustments, not negative
    prices): every model prices max(0, quantity)."""
    return max(quantity, ZERO)
