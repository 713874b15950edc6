"""Payments: an attempt's states, what its outcome does to the invoice, its idempotency
keys, and when dunning tries again. Pure (the clock is passed in)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from core.domain.invoices.status import InvoiceStatus


class PaymentStatus(StrEnum):
    PENDING = "pending"  # recorded before the provider is called
    AWAITING = "awaiting"  # the provider (or an operator, for manual) settles it later
    SUCCEEDED = "succeeded"
    FAILED = "failed"


STATUSES: tuple[str, ...] = tuple(status.value for status in PaymentStatus)


def open_(status: PaymentStatus | str) -> bool:
    """Not settled yet: a webhook or an operator may still settle it."""
    return PaymentStatus(status) in {PaymentStatus.PENDING, PaymentStatus.AWAITING}


def invoice_status_after(outcome: PaymentStatus | str) -> InvoiceStatus | None:
    """What a settled attempt makes its invoice; None while it is not settled."""
    outcome = PaymentStatus(outcome)
    if outcome is PaymentStatus.SUCCEEDED:
        return InvoiceStatus.PAID
    if outcome is PaymentStatus.FAILED:
        return InvoiceStatus.PAYMENT_FAILED
    return None


def provider_key(invoice_id: str, attempt: int) -> str:
    """The idempotency key sent to the provider: the same for every retry of an attempt,
    so a crash between the call and the commit never charges twice."""
    return f"abaxus-{invoice_id}-attempt-{attempt}"


def manual_key(invoice_id: str, attempt: int) -> str:
    return f"abaxus-{invoice_id}-manual-{attempt}"


def attempt_job_key(invoice_id: str, attempt: int) -> str:
    return f"charge-{invoice_id}-{attempt}"


def next_attempt_at(
    failed_attempt: int, schedule_days: Sequence[int], now: datetime
) -> datetime | None:
    """After attempt n failed: the next attempt's time per the dunning schedule, or None
    when n was the last (the invoice stays payment_failed)."""
    if failed_attempt > len(schedule_days):
        return None
    return now + timedelta(days=schedule_days[failed_attempt - 1])
