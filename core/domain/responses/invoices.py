"""Invoices, their lines (usage and adjustments), explanations, adjustments and bulk runs
as the API shows them (API.md §8)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from core.domain.invoices.status import InvoiceStatus
from core.domain.responses.common import (
    Checksum,
    Currency,
    DecimalText,
    InstantText,
    Period,
    ResponseModel,
)
from core.domain.responses.pricing import BreakdownRow, CalculationLine, ChargeModel
from core.domain.responses.usage import Correction

AdjustmentKind = Literal[
    "late_usage", "correction", "manual", "credit_carried", "void_credit", "reversal"
]


class UsageLine(CalculationLine):
    """A line of the period's calculation, as the invoice bills it."""

    type: Literal["usage"]


class AdjustmentLine(ResponseModel):
    """An adjustment the invoice carries (late usage of an earlier period, a manual
    correction, credit carried forward, a reversal)."""

    type: Literal["adjustment"]
    line: int = Field(ge=1)
    adjustment_id: str
    kind: AdjustmentKind
    description: str
    original_invoice_id: str | None
    metric_key: str | None
    meter_version: int | None
    quantity: DecimalText | None
    amount: DecimalText


class CommitmentLine(ResponseModel):
    """The period's minimum commitment true-up (positive) or maximum charge cap (negative),
    on its usage and fee lines (API.md §11)."""

    type: Literal["commitment"]
    line: int = Field(ge=1)
    kind: Literal["minimum_commitment", "maximum_charge"]
    description: str
    commitment: DecimalText = Field(description="the minimum or maximum, prorated for the period")
    amount: DecimalText


class DiscountLine(ResponseModel):
    """A discount in force for the period (API.md §12): negative, never more than what the
    earlier lines leave."""

    type: Literal["discount"]
    line: int = Field(ge=1)
    discount_id: str
    coupon_code: str
    description: str
    metric_keys: list[str] | None = Field(description="null: every charge of the period")
    amount: DecimalText


InvoiceLine = Annotated[
    UsageLine | AdjustmentLine | CommitmentLine | DiscountLine, Field(discriminator="type")
]


class Invoice(ResponseModel):
    id: str
    kind: Literal["subscription", "adjustments"] = Field(
        description="adjustments: a standalone invoice of adjustments no subscription invoice "
        "will carry"
    )
    number: str | None = Field(description="gap-free, given when issued")
    status: InvoiceStatus
    customer_id: str
    subscription_id: str | None
    period: Period
    currency: Currency
    calculation_id: str | None
    priced_at: InstantText | None
    plan_code: str | None
    plan_version: int | None
    lines: list[InvoiceLine]
    subtotal: DecimalText
    total: DecimalText
    credit_carried: DecimalText = Field(description="what a negative subtotal leaves for later")
    amount_due: DecimalText
    checksum: Checksum
    replaces: str | None = Field(description="the voided invoice this one replaces")
    net_terms_days: int
    due_at: InstantText | None
    issued_at: InstantText | None
    paid_at: InstantText | None
    voided_at: InstantText | None
    void_reason: str | None
    created_at: InstantText
    complete: bool = Field(
        description="every region's events up to the period's end were here when it was "
        "priced (API.md §10); false only under ABAXUS_REGION_POLICY=bill_available"
    )
    regions_lacking: list[str] = Field(description="the regions it was priced without")


class ExplainedUsageLine(ResponseModel):
    line: int = Field(ge=1)
    type: Literal["usage"]
    charge: str
    model: ChargeModel
    metric_key: str | None
    meter_version: int | None
    meter_versions: list[int]
    plan_code: str | None
    plan_version: int | None
    quantity: DecimalText
    breakdown: list[BreakdownRow]
    amount: DecimalText
    event_count: int
    events_checksum: Checksum | None
    events_url: str | None = Field(description="lists the events behind the line")


class ExplainedAdjustmentLine(ResponseModel):
    line: int = Field(ge=1)
    type: Literal["adjustment"]
    adjustment_id: str
    kind: AdjustmentKind
    description: str
    original_invoice_id: str | None
    meter_version: int | None
    amount: DecimalText


class InvoiceExplanation(ResponseModel):
    """Per line: where its number comes from, and how to list the events behind it."""

    invoice_id: str
    number: str | None
    calculation_id: str | None
    checksum: Checksum
    lines: list[
        Annotated[
            ExplainedUsageLine | ExplainedAdjustmentLine | CommitmentLine | DiscountLine,
            Field(discriminator="type"),
        ]
    ]


class CarriedBy(ResponseModel):
    invoice_id: str
    number: str | None
    status: InvoiceStatus | None


class Adjustment(ResponseModel):
    id: str
    customer_id: str
    subscription_id: str | None
    kind: AdjustmentKind
    original_invoice_id: str | None
    charge: str | None
    metric_key: str | None
    meter_version: int | None
    plan_version: int | None
    quantity_delta: DecimalText | None
    amount_delta: DecimalText
    currency: Currency
    reason: str
    description: str
    applied_invoice_id: str | None
    applied_at: InstantText | None
    reverses: str | None
    cancelled_at: InstantText | None
    cancel_reason: str | None
    correction_id: str | None = Field(description="the correction that caused it (§19)")
    added_sha256: Checksum | None = Field(
        description="a correction's: the events it added to the period (events_checksum)"
    )
    superseded_sha256: Checksum | None = Field(
        description="a correction's: the events of the period it superseded"
    )
    created_at: InstantText
    status: Literal["pending", "applied", "cancelled"]
    carried_by: CarriedBy | None = Field(description="the invoice carrying it; null while pending")


class InvoiceRunStarted(ResponseModel):
    id: str
    period_end: InstantText
    subscriptions: int = Field(description="how many subscriptions the run requests")


class InvoiceRunFailure(ResponseModel):
    ce_id: str
    code: str | None
    detail: str | None
    at: InstantText


class InvoiceRun(ResponseModel):
    id: str
    period_end: InstantText
    issue: bool
    charge: bool
    subscriptions: int
    by_status: dict[str, int] = Field(
        description="the run's subscriptions by their invoice's status ('requested' before)"
    )
    failed: int
    failures: list[InvoiceRunFailure]
    complete: bool
    created_at: InstantText


class CorrectionSettled(Correction):
    """A correction just applied or reverted, with the adjustments it recorded on issued
    invoices (one per affected period and charge)."""

    adjustments: list[Adjustment]
