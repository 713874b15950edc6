"""Request bodies of the invoicing API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from core.domain.fields import ClientId, CurrencyCode, ExactDecimal, Instant

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class NewInvoice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    subscription_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    period_start: Instant
    period_end: Instant


class VoidInvoice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reason: Reason


class NewAdjustment(BaseModel):
    """A manual correction: positive (charge more) or negative (credit), with a reason;
    carried by the customer's next invoice."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    customer_id: ClientId
    amount: ExactDecimal
    reason: Reason
    description: Reason | None = None
    currency: CurrencyCode | None = None
    subscription_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    invoice_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None


class MarkPaid(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reference: Reason


class BulkRun(BaseModel):
    """POST /v1/invoices/bulk: every subscription whose period ends at `period_end`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    period_end: Instant
    issue: bool = True
    charge: bool = False
