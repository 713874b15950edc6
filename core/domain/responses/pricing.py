"""Calculations as the API shows them: priced lines with the breakdown of each pricing
model, traceable to the raw events behind them (API.md §7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.domain.responses.catalog import ChargeShown
from core.domain.responses.common import (
    Checksum,
    Currency,
    DecimalText,
    InstantText,
    Period,
    ResponseModel,
)
from core.domain.responses.usage import Completeness

ChargeModel = Literal[
    "per_unit", "tiered", "volume", "package", "flat_fee", "matrix", "custom_formula"
]

# -- breakdown rows: what each pricing model shows of how it got its amount -----------------
# A row does not name its model (the line does); each shape has its own fields.


class TierRow(ResponseModel):
    """per_unit (one row), tiered (one per tier reached), volume (the tier the total is in)."""

    from_: DecimalText = Field(alias="from")
    to: DecimalText | None
    quantity: DecimalText
    unit_price: DecimalText
    flat_fee: DecimalText
    amount: DecimalText


class PackageRow(ResponseModel):
    quantity: DecimalText
    free_units: DecimalText
    billable_units: DecimalText
    package_size: DecimalText
    packages: DecimalText
    package_price: DecimalText
    amount: DecimalText


class FlatFeeRow(ResponseModel):
    amount_per_period: DecimalText
    covered_days: int
    period_days: int
    amount: DecimalText


class MatrixRow(ResponseModel):
    """One group of the metric's group_by, priced by its row (or the default price)."""

    group: dict[str, str | None]
    quantity: DecimalText
    unit_price: DecimalText
    amount: DecimalText


class FormulaRow(ResponseModel):
    formula: str
    quantity: DecimalText
    period_days: int
    amount: DecimalText


BreakdownRow = TierRow | PackageRow | FlatFeeRow | MatrixRow | FormulaRow


class CalculationLine(ResponseModel):
    line: int = Field(ge=1)
    charge: str = Field(description="the charge's name, else its metric_key")
    model: ChargeModel
    metric_key: str | None = Field(description="null for a flat fee")
    meter_version: int | None
    meter_versions: list[int]
    quantity: DecimalText
    amount: DecimalText = Field(description="rounded once, half up, to the currency's minor units")
    unrounded_amount: DecimalText
    breakdown: list[BreakdownRow]
    event_count: int
    events_checksum: Checksum | None = Field(
        description="SHA-256 of the canonical form of the events behind the line"
    )
    charge_definition: ChargeShown = Field(
        description="the charge as priced (overrides applied; fields that are null left out)"
    )


class CalculationTrial(ResponseModel):
    ends_at: InstantText
    bills_usage: bool = Field(description="false: usage before `ends_at` is not billed")


class CalculationCommitment(ResponseModel):
    """The period's commitment: the invoice's commitments step applies it, prorated by
    `billed_days / period_days` (the days the flat fees bill)."""

    minimum: DecimalText | None = None
    maximum: DecimalText | None = None
    period_days: int
    billed_days: int


class Calculation(Completeness):
    """Same subscription, period and events: same `id` and `checksum`."""

    id: str
    subscription_id: str
    customer_id: str
    plan_code: str
    plan_version: int
    period: Period
    coverage: Period | None = Field(description="the part of the period the subscription covers")
    currency: Currency
    consistency: Literal["exact"]
    lines: list[CalculationLine]
    subtotal: DecimalText
    total: DecimalText
    inputs_checksum: Checksum
    checksum: Checksum
    trial: CalculationTrial | None = Field(
        default=None, description="the subscription's trial, when it touches the period"
    )
    commitment: CalculationCommitment | None = Field(
        default=None, description="the period's minimum commitment or maximum charge"
    )
    # Completeness (inherited): whether the period is complete here at the time of the answer.


class LineEvent(ResponseModel):
    """A raw event behind a line, with the meter version that counted it."""

    id: str
    idempotency_key: str
    timestamp: InstantText
    value: DecimalText
    properties: dict[str, Any]
    meter_version: int


class SimulatedPeriod(ResponseModel):
    subscription_id: str
    invoice_id: str = Field(description="the binding invoice of the period")
    period: Period
    invoiced: DecimalText = Field(
        description="the invoice's period charges: usage and fees, commitment and discount lines"
    )
    adjusted: DecimalText = Field(
        description="late-usage and correction adjustments later recorded for the period"
    )
    billed: DecimalText = Field(description="invoiced + adjusted")
    simulated: DecimalText = Field(description="the candidate charges, priced as invoices are")
    delta: DecimalText = Field(description="simulated - billed")


class SimulatedCustomer(ResponseModel):
    customer_id: str
    periods: list[SimulatedPeriod]
    billed: DecimalText
    simulated: DecimalText
    delta: DecimalText


class SimulationTotal(ResponseModel):
    billed: DecimalText
    simulated: DecimalText
    delta: DecimalText


class PriceSimulationResult(ResponseModel):
    """What candidate charges would have billed; nothing is stored or changed."""

    plan_code: str
    periods: int = Field(description="per subscription, its latest invoiced periods")
    currency: Currency
    customers: list[SimulatedCustomer]
    total: SimulationTotal
