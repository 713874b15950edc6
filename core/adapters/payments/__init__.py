"""Payment providers: one interface, `stripe` (the official SDK) and `manual`."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class ChargeRequest:
    invoice_id: str
    invoice_number: str
    amount: Decimal  # in major units, rounded to the currency
    currency: str
    provider_customer_id: str | None
    payment_method: str | None
    idempotency_key: str


@dataclass(frozen=True)
class ChargeResult:
    status: str  # succeeded | failed | awaiting (manual: waits for mark-paid)
    provider_id: str | None = None
    error: str | None = None


class TemporaryFailure(Exception):
    """The provider could not be reached or answered 5xx/429: retry the same attempt with
    the same idempotency key."""


class PaymentProvider(Protocol):
    name: str

    def charge(self, request: ChargeRequest) -> ChargeResult: ...
