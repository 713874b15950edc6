"""Commercial terms of a plan version and of one subscription (API.md §11): a trial and
the per-period commitments.

- `trial_days`: from the subscription's start, flat fees are not billed; usage is billed
  only when the plan says `trial_bills_usage`. The period structure does not change: a
  period the trial ends in bills its flat fees for the days after the trial.
- `minimum_commitment` / `maximum_charge`: per billing period, on the period's charges
  (usage and fees); prorated for a partial period by the same days as flat fees.

A plan version states its terms; a subscription may override `trial_days`,
`minimum_commitment` and `maximum_charge` (not `trial_bills_usage`: what a trial bills is
the plan's). Stored as JSON with exact decimal text, only the terms that are set, so a
plan without terms keeps the definition checksum it always had.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.domain.canonical import decimal_text
from core.domain.fields import Amount

TRIAL_DAYS_MAX = 730


class SubscriptionTerms(BaseModel):
    """The terms a subscription may override (each absent one is the plan's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trial_days: Annotated[int, Field(ge=0, le=TRIAL_DAYS_MAX)] | None = None
    minimum_commitment: Amount | None = None
    maximum_charge: Amount | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        require_ordered(self.minimum_commitment, self.maximum_charge)
        return self

    def stored(self) -> dict[str, Any]:
        return stored_terms(self.model_dump(exclude_none=True))


class PlanTerms(SubscriptionTerms):
    trial_bills_usage: bool | None = None


def require_ordered(minimum: Decimal | None, maximum: Decimal | None) -> None:
    if minimum is not None and maximum is not None and maximum < minimum:
        raise ValueError("maximum_charge must not be below minimum_commitment")


def stored_terms(terms: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready: decimals as their exact text, unset terms left out."""
    return {
        key: decimal_text(value) if isinstance(value, Decimal) else value
        for key, value in sorted(terms.items())
        if value is not None
    }


@dataclass(frozen=True)
class Terms:
    """The terms in force for one subscription: its overrides over its plan version's."""

    trial_days: int | None
    trial_bills_usage: bool
    minimum_commitment: Decimal | None
    maximum_charge: Decimal | None

    def commitment(self) -> dict[str, str] | None:
        """The commitment as a calculation states it (None without one)."""
        found = {
            "minimum": self.minimum_commitment,
            "maximum": self.maximum_charge,
        }
        if all(value is None for value in found.values()):
            return None
        return {key: decimal_text(value) for key, value in found.items() if value is not None}


def effective_terms(plan_terms: dict[str, Any], subscription_terms: dict[str, Any]) -> Terms:
    """The subscription's value of each term where it sets one, else its plan version's.
    Raises ValueError when the combination is incoherent (a maximum below the minimum)."""
    merged = {**plan_terms, **subscription_terms}

    def amount(key: str) -> Decimal | None:
        value = merged.get(key)
        return None if value is None else Decimal(str(value))

    terms = Terms(
        trial_days=merged.get("trial_days"),
        trial_bills_usage=bool(plan_terms.get("trial_bills_usage", False)),
        minimum_commitment=amount("minimum_commitment"),
        maximum_charge=amount("maximum_charge"),
    )
    require_ordered(terms.minimum_commitment, terms.maximum_charge)
    return terms
