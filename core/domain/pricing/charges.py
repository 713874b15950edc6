"""Charge definitions: one model class per pricing model, a discriminated union on `model`.

Validated as data when a plan is created, so an unknown model, a broken tier ladder or an
invalid formula is refused then, never discovered at billing time. The semantics are
API.md section 2; the pricing functions (one module per model) come with the pricing
engine and read exactly these definitions.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from core.domain.fields import Amount, MetricKey, Name, PositiveAmount, PropertyName, PropertyValue
from core.domain.money import is_currency
from core.domain.periods import Interval
from core.domain.pricing import formula
from core.domain.pricing.terms import TRIAL_DAYS_MAX, require_ordered, stored_terms

TIERS_MAX = 50
MATRIX_ROWS_MAX = 500
CHARGES_MAX = 50
FORMULA_CHARS_MAX = formula.FORMULA_CHARS_MAX


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    up_to: PositiveAmount | None
    unit_price: Amount
    flat_fee: Amount = Decimal(0)


def _check_ladder(tiers: list[Tier]) -> None:
    """`up_to` strictly increasing and inclusive; exactly the last tier open (null)."""
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        if last and tier.up_to is not None:
            raise ValueError("the last tier must have up_to null (open-ended)")
        if not last and tier.up_to is None:
            raise ValueError(f"only the last tier may be open-ended (tier {index} has up_to null)")
        if index > 0 and tier.up_to is not None:
            previous = tiers[index - 1].up_to
            assert previous is not None
            if tier.up_to <= previous:
                raise ValueError(f"tier {index} up_to must be greater than tier {index - 1}'s")


class _Charge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name | None = None

    @property
    def label(self) -> str:
        """The charge's identity within a plan (line items and overrides name it)."""
        return self.name or getattr(self, "metric_key", None) or str(getattr(self, "model", ""))


class PerUnit(_Charge):
    model: Literal["per_unit"]
    metric_key: MetricKey
    unit_price: Amount


class _TierLadder(_Charge):
    metric_key: MetricKey
    tiers: Annotated[list[Tier], Field(min_length=1, max_length=TIERS_MAX)]

    @model_validator(mode="after")
    def _ladder(self) -> Self:
        _check_ladder(self.tiers)
        return self


class Tiered(_TierLadder):
    """Graduated: each unit priced in the tier it falls in, plus each reached tier's fee."""

    model: Literal["tiered"]


class Volume(_TierLadder):
    """All units at the price of the tier the total falls in, plus that tier's fee."""

    model: Literal["volume"]


class Package(_Charge):
    model: Literal["package"]
    metric_key: MetricKey
    package_size: PositiveAmount
    package_price: Amount
    free_units: Amount = Decimal(0)


class FlatFee(_Charge):
    model: Literal["flat_fee"]
    amount: Amount


class MatrixPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    match: Annotated[dict[PropertyName, PropertyValue], Field(min_length=1, max_length=5)]
    unit_price: Amount


class Matrix(_Charge):
    """Usage grouped by the metric's group_by; each group priced by the first matching row,
    else default_unit_price, else refused."""

    model: Literal["matrix"]
    metric_key: MetricKey
    prices: Annotated[list[MatrixPrice], Field(min_length=1, max_length=MATRIX_ROWS_MAX)]
    default_unit_price: Amount | None = None


class CustomFormula(_Charge):
    model: Literal["custom_formula"]
    metric_key: MetricKey
    formula: Annotated[str, Field(min_length=1, max_length=FORMULA_CHARS_MAX)]

    @model_validator(mode="after")
    def _compiles(self) -> Self:
        formula.compile_formula(self.formula)  # FormulaError (a ValueError) with the position
        return self


Charge = Annotated[
    PerUnit | Tiered | Volume | Package | FlatFee | Matrix | CustomFormula,
    Field(discriminator="model"),
]
MODELS = ("per_unit", "tiered", "volume", "package", "flat_fee", "matrix", "custom_formula")
CHARGE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Charge)


def require_distinct_labels(charges: list[Any]) -> None:
    """A plan's charges are told apart by their labels (name, else metric): ValueError
    naming those given twice."""
    labels = [charge.label for charge in charges]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"charges need distinct names; give `name` to the charges on {duplicates}")


class PlanVersionDefinition(BaseModel):
    """The body of POST /v1/price-plans/{code}/versions (a plan without its code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    interval: Interval
    charges: Annotated[list[Charge], Field(min_length=1, max_length=CHARGES_MAX)]
    # Commercial terms (core/domain/pricing/terms.py)
    trial_days: Annotated[int, Field(ge=0, le=TRIAL_DAYS_MAX)] | None = None
    trial_bills_usage: bool | None = None
    minimum_commitment: Amount | None = None
    maximum_charge: Amount | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if not is_currency(self.currency):
            raise ValueError(f"{self.currency} is not an ISO 4217 currency")
        require_distinct_labels(self.charges)
        require_ordered(self.minimum_commitment, self.maximum_charge)
        return self

    def terms(self) -> dict[str, Any]:
        return stored_terms(
            {
                "trial_days": self.trial_days,
                "trial_bills_usage": self.trial_bills_usage,
                "minimum_commitment": self.minimum_commitment,
                "maximum_charge": self.maximum_charge,
            }
        )

    def metric_keys(self) -> set[str]:
        return {c.metric_key for c in self.charges if hasattr(c, "metric_key")}


def apply_overrides(charges: list[Any], overrides: list[dict[str, Any]]) -> list[Any]:
    """A subscription's charges: each override replaces fields of the one charge it names
    (by `charge` name, or by `metric_key` when that is unambiguous); the result is
    validated like a charge. `model` and `metric_key` cannot be overridden."""
    result = list(charges)
    for index, override in enumerate(overrides):
        fields = dict(override)
        wanted_name, wanted_metric = fields.pop("charge", None), fields.pop("metric_key", None)
        matches = [
            position
            for position, charge in enumerate(result)
            if (wanted_name is not None and charge.label == wanted_name)
            or (wanted_name is None and getattr(charge, "metric_key", None) == wanted_metric)
        ]
        if wanted_name is None and wanted_metric is None:
            raise OverrideError(index, "an override names its charge by `charge` or `metric_key`")
        if len(matches) != 1:
            what = wanted_name or wanted_metric
            raise OverrideError(index, f"{len(matches)} charges match {what!r}; exactly one must")
        if "model" in fields:
            raise OverrideError(index, "an override cannot change a charge's model")
        if not fields:
            raise OverrideError(index, "an override must replace at least one field")
        position = matches[0]
        merged = {**result[position].model_dump(mode="python"), **fields}
        try:
            result[position] = CHARGE_ADAPTER.validate_python(merged)
        except ValidationError as error:
            problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in error.errors())
            raise OverrideError(index, f"the overridden charge is invalid: {problems}") from error
    return result


class OverrideError(ValueError):
    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


SIMULATION_PERIODS_MAX = 12


class PriceSimulation(BaseModel):
    """POST /v1/price-plans/{code}/simulate: candidate charges, priced over the last
    `periods` invoiced periods of every subscription on the plan (API.md §11)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    charges: Annotated[list[Charge], Field(min_length=1, max_length=CHARGES_MAX)]
    periods: Annotated[int, Field(ge=1, le=SIMULATION_PERIODS_MAX)] = 3

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        require_distinct_labels(self.charges)
        return self
