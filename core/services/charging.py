"""Charging issued invoices through the customer's payment provider.

An attempt is a job (queue `charge`). Its payment row, with the idempotency key
`abaxus-<invoice>-attempt-<n>`, is committed *before* the provider is called; the
provider's answer is recorded in the transaction that completes the job. If the worker
dies between the call and that commit, the job runs again and calls with the same key:
the provider answers with the same payment, and nothing is charged twice. A failed
attempt schedules the next one per ABAXUS_DUNNING_DAYS; after the last, the invoice stays
`payment_failed`. Every outcome is announced (`payment.succeeded` / `payment.failed`).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters import queue
from core.adapters.payments import ChargeRequest, ChargeResult, PaymentProvider, TemporaryFailure
from core.adapters.payments.manual import ManualProvider
from core.adapters.payments.stripe_provider import StripeProvider
from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import invoices as invoice_rows
from core.adapters.postgres import payments as payment_rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain import event_types, payments
from core.domain.canonical import decimal_text
from core.domain.errors import Conflict, NotFound
from core.domain.invoices import status
from core.domain.invoices.status import InvoiceStatus
from core.domain.payments import PaymentStatus
from core.services import audit, notify
from core.services.caller import SYSTEM, Caller
from core.services.listing import paginate

CHARGE_QUEUE = "charge"
ATTEMPT_JOB = "attempt"  # payload {"invoice_id", "attempt"}

log = logging.getLogger(__name__)


def provider_for(name: str) -> PaymentProvider:
    if name == "stripe":
        config = settings()
        if not config.stripe_api_key:
            raise queue.GiveUp("STRIPE_API_KEY is not configured")
        return StripeProvider(config.stripe_api_key, config.stripe_api_base)
    return ManualProvider()


def _enqueue_attempt(
    connection: Connection, invoice_id: str, attempt: int, run_after: datetime | None = None
) -> bool:
    return (
        queue.enqueue(
            connection,
            CHARGE_QUEUE,
            ATTEMPT_JOB,
            {"invoice_id": invoice_id, "attempt": attempt},
            dedupe_key=payments.attempt_job_key(invoice_id, attempt),
            run_after=run_after,
        )
        is not None
    )


def _chargeable(invoice: dict[str, Any] | None, invoice_id: str) -> dict[str, Any]:
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    if not status.chargeable(invoice["status"]):
        raise Conflict(
            f"invoice {invoice_id} is {invoice['status']}: only issued invoices are charged",
            code=f"invoice_{invoice['status']}",
        )
    return invoice


def request_charge(caller: Caller, invoice_id: str) -> dict[str, Any]:
    """Queue the next attempt for an issued (or failed) invoice, due now. Idempotent: an
    attempt already queued is not queued again (one that dunning scheduled for later is
    made due now)."""
    with get_database().transaction() as connection:
        _chargeable(invoice_rows.get(connection, invoice_id, lock=True), invoice_id)
        attempt = payment_rows.attempts(connection, invoice_id) + 1
        # An attempt already scheduled by dunning runs now instead: the operator asked.
        queued = _enqueue_attempt(connection, invoice_id, attempt) or queue.bring_forward(
            connection, CHARGE_QUEUE, payments.attempt_job_key(invoice_id, attempt)
        )
        if queued:
            audit.record(
                connection,
                caller,
                action="invoice.charge_requested",
                entity="invoice",
                entity_id=invoice_id,
                state={"attempt": attempt},
            )
        return {"invoice_id": invoice_id, "attempt": attempt, "queued": queued}


def run_attempt(job: queue.Job) -> None:
    invoice_id, attempt = str(job.payload["invoice_id"]), int(job.payload["attempt"])
    with get_database().transaction() as connection:
        # Not locked yet: the payment row is committed on another connection first, and its
        # foreign key check must not wait for this one. settle() locks the invoice.
        invoice = invoice_rows.get(connection, invoice_id)
        if invoice is None:
            raise queue.GiveUp(f"no invoice {invoice_id}")
        if not status.chargeable(invoice["status"]):
            log.info(
                "nothing to charge", extra={"invoice_id": invoice_id, "status": invoice["status"]}
            )
            return
        customer = customer_rows.get(connection, invoice["customer_id"])
        assert customer is not None
        provider = provider_for(customer["billing_provider"])
        key = payments.provider_key(invoice_id, attempt)
        payment = payment_rows.record_pending(
            {
                "id": f"pay_{secrets.token_hex(12)}",
                "invoice_id": invoice_id,
                "attempt": attempt,
                "provider": provider.name,
                "idempotency_key": key,
                "amount": invoice["total"],
                "currency": invoice["currency"],
            }
        )
        if payment["status"] != PaymentStatus.PENDING:  # settled by an earlier run or a webhook
            return
        if invoice["total"] == 0:
            result = ChargeResult("succeeded", None)
        else:
            try:
                result = provider.charge(
                    ChargeRequest(
                        invoice_id=invoice_id,
                        invoice_number=str(invoice["number"]),
                        amount=Decimal(invoice["total"]),
                        currency=invoice["currency"],
                        provider_customer_id=customer["provider_customer_id"],
                        payment_method=customer["payment_method"],
                        idempotency_key=key,
                    )
                )
            except TemporaryFailure as error:
                raise queue.RetryLater(str(error), queue.backoff(job.attempts + 1)) from error
        settle(connection, payment, result)


def settle(connection: Connection, payment: dict[str, Any], result: ChargeResult) -> None:
    """Record a provider's answer on the payment and the invoice, and announce it."""
    now = datetime.now(UTC)
    payment_rows.settle(
        connection,
        payment["id"],
        status=result.status,
        provider_id=result.provider_id or payment.get("provider_id"),
        error=result.error,
        at=now,
    )
    invoice_id = payment["invoice_id"]
    invoice = invoice_rows.get(connection, invoice_id, lock=True)
    assert invoice is not None
    after = payments.invoice_status_after(result.status)
    if after is None or not status.chargeable(invoice["status"]):
        return
    data = {
        "invoice_id": invoice_id,
        "payment_id": payment["id"],
        "attempt": payment["attempt"],
        "amount": decimal_text(Decimal(payment["amount"])),  # JSON data: exact text
        "currency": payment["currency"],
    }
    if after is InvoiceStatus.PAID:
        invoice_rows.change(connection, invoice_id, {"status": after.value, "paid_at": now})
        notify.emit_after_commit(
            event_types.PAYMENT_SUCCEEDED, data, event_id=f"payment-succeeded-{payment['id']}"
        )
        return
    if invoice["status"] != after:
        invoice_rows.change(connection, invoice_id, {"status": after.value})
    next_at = payments.next_attempt_at(payment["attempt"], settings().dunning_days, now)
    if next_at is not None:
        _enqueue_attempt(connection, invoice_id, payment["attempt"] + 1, next_at)
    notify.emit_after_commit(
        event_types.PAYMENT_FAILED,
        {**data, "error": result.error, "final": next_at is None},
        event_id=f"payment-failed-{payment['id']}",
    )


def mark_paid(caller: Caller, invoice_id: str, reference: str) -> dict[str, Any]:
    """Manual payments: the operator records that the invoice was paid."""
    with get_database().transaction() as connection:
        invoice = invoice_rows.get(connection, invoice_id, lock=True)
        if invoice is not None and invoice["status"] == InvoiceStatus.PAID:
            return invoice
        invoice = _chargeable(invoice, invoice_id)
        payment = payment_rows.open_attempt(connection, invoice_id)
        if payment is None:
            attempt = payment_rows.attempts(connection, invoice_id) + 1
            payment = payment_rows.insert_attempt(
                connection,
                {
                    "id": f"pay_{secrets.token_hex(12)}",
                    "invoice_id": invoice_id,
                    "attempt": attempt,
                    "provider": "manual",
                    "idempotency_key": payments.manual_key(invoice_id, attempt),
                    "amount": invoice["total"],
                    "currency": invoice["currency"],
                    "status": PaymentStatus.PENDING.value,
                    "reference": reference,
                },
            )
        payment_rows.set_reference(connection, payment["id"], reference)
        settle(connection, payment, ChargeResult("succeeded", None))
        changed = invoice_rows.change(connection, invoice_id, {"payment_reference": reference})
        audit.record(
            connection,
            caller,
            action="invoice.marked_paid",
            entity="invoice",
            entity_id=invoice_id,
            state={"reference": reference},
        )
        return changed


def stripe_event(event: Any) -> str:
    """A verified Stripe webhook event: settle the payment it is about."""
    kind = str(event["type"])
    if kind not in {"payment_intent.succeeded", "payment_intent.payment_failed"}:
        return "ignored"
    intent = event["data"]["object"]
    with get_database().transaction() as connection:
        payment = payment_rows.by_provider_id(connection, intent["id"])
        if payment is None:
            return "unknown_payment"
        if not payments.open_(payment["status"]):
            return "already_settled"
        if kind == "payment_intent.succeeded":
            settle(connection, payment, ChargeResult("succeeded", intent["id"]))
        else:
            error = (intent.get("last_payment_error") or {}).get("message") or "payment failed"
            settle(connection, payment, ChargeResult("failed", intent["id"], error))
        audit.record(
            connection,
            SYSTEM,
            action="payment.webhook",
            entity="payment",
            entity_id=payment["id"],
            state={"type": kind},
        )
    return "settled"


PAYMENT_STATUSES = payments.STATUSES
PAYMENT_FIELDS = (
    "id",
    "invoice_id",
    "customer_id",
    "attempt",
    "provider",
    "provider_id",
    "idempotency_key",
    "amount",
    "currency",
    "status",
    "error",
    "reference",
    "created_at",
    "updated_at",
)


def payment_view(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in PAYMENT_FIELDS}


def get_payment(payment_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = payment_rows.get(connection, payment_id)
    if row is None:
        raise NotFound(f"no payment {payment_id!r}")
    return payment_view(row)


def list_payments(
    *,
    customer_id: str | None,
    invoice_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Payment attempts, oldest id first; filtered by customer, invoice or status."""
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: payment_rows.page(
                connection,
                customer_id=customer_id,
                invoice_id=invoice_id,
                status=status,
                after=after,
                limit=n,
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )
    return [payment_view(row) for row in page], next_cursor
