"""Payment attempts and what the charge routes answer (docs/concepts.md, "Payments")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.domain.payments import PaymentStatus
from core.domain.responses.common import Currency, DecimalText, InstantText, ResponseModel


class Payment(ResponseModel):
    """One attempt to collect an invoice through the customer's provider."""

    id: str
    invoice_id: str
    customer_id: str
    attempt: int = Field(ge=1)
    provider: Literal["stripe", "manual"]
    provider_id: str | None = Field(description="the provider's id (a PaymentIntent)")
    idempotency_key: str = Field(description="abaxus-<invoice>-attempt-<n>")
    amount: DecimalText
    currency: Currency
    status: PaymentStatus
    error: str | None
    reference: str | None = Field(description="a manual payment's reference")
    created_at: InstantText
    updated_at: InstantText


class ChargeQueued(ResponseModel):
    """The attempt queued (it runs once the request has committed, before the answer)."""

    invoice_id: str
    attempt: int = Field(ge=1)
    queued: bool = Field(description="false: that attempt was already queued")


class WebhookReceived(ResponseModel):
    received: Literal[True]
    outcome: Literal["settled", "already_settled", "unknown_payment", "ignored"]
