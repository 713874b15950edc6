"""Adjustments: manual corrections, and late usage — events of a period whose invoice is
already binding, found by the aggregator in the fold's own transaction and recorded as
the difference the period is still missing (core/domain/invoices/late_usage.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters import queue
from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import invoices as rows
from core.adapters.postgres import subscriptions as subscription_rows
from core.adapters.postgres.database import get_database
from core.domain.errors import FieldError, ValidationFailed
from core.domain.invoices import NewAdjustment, status
from core.domain.invoices.assembly import usage_lines
from core.domain.invoices.commitments import Commitment
from core.domain.invoices.late_usage import (
    TERMS_KEY,
    Billed,
    description,
    differences,
    period_label,
    terms_difference,
)
from core.domain.money import round_to_currency
from core.domain.periods import Period
from core.services import audit, pricing
from core.services.caller import SYSTEM, Caller
from core.services.catalog import coupons
from core.services.invoicing import INVOICE_QUEUE, LATE_USAGE_JOB, new_id
from core.services.invoicing.views import adjustment_view

log = logging.getLogger(__name__)
ZERO = Decimal(0)


def record_adjustment(caller: Caller, body: NewAdjustment) -> dict[str, Any]:
    with get_database().transaction() as connection:
        customer = customer_rows.get(connection, body.customer_id)
        if customer is None:
            raise ValidationFailed(
                f"no customer {body.customer_id!r}",
                code="unknown_customer",
                errors=[FieldError(("body", "customer_id"), "unknown customer")],
            )
        currency = _adjustment_currency(connection, body, customer["currency"])
        created = rows.insert_adjustment(
            connection,
            {
                "id": new_id("adj"),
                "customer_id": body.customer_id,
                "subscription_id": body.subscription_id,
                "kind": "manual",
                "original_invoice_id": body.invoice_id,
                "amount_delta": round_to_currency(body.amount, currency),
                "currency": currency,
                "reason": body.reason,
                "description": body.description or body.reason,
            },
        )
        shown = adjustment_view(created)
        audit.record(
            connection,
            caller,
            action="adjustment.recorded",
            entity="adjustment",
            entity_id=created["id"],
            state=shown,
        )
        return shown


def _adjustment_currency(connection: Connection, body: NewAdjustment, default: str) -> str:
    """The currency a manual adjustment is in, once the invoice and subscription it names
    are shown to exist and to be the customer's: the invoice's currency, else the one the
    request gives, else the customer's. A currency that contradicts the invoice is
    refused, as is an invoice or subscription of another customer."""
    currency = body.currency
    if body.subscription_id is not None:
        subscription = subscription_rows.get(connection, body.subscription_id)
        if subscription is None or subscription["customer_id"] != body.customer_id:
            raise ValidationFailed(
                f"customer {body.customer_id!r} has no subscription {body.subscription_id!r}",
                code="unknown_subscription",
                errors=[FieldError(("body", "subscription_id"), "not this customer's")],
            )
    if body.invoice_id is not None:
        invoice = rows.get(connection, body.invoice_id)
        if invoice is None or invoice["customer_id"] != body.customer_id:
            raise ValidationFailed(
                f"customer {body.customer_id!r} has no invoice {body.invoice_id!r}",
                code="unknown_invoice",
                errors=[FieldError(("body", "invoice_id"), "not this customer's")],
            )
        if currency is not None and currency != invoice["currency"]:
            raise ValidationFailed(
                f"invoice {body.invoice_id!r} is in {invoice['currency']}, not {currency}",
                code="currency_mismatch",
                errors=[FieldError(("body", "currency"), "differs from the invoice's")],
            )
        currency = invoice["currency"]
    return currency or default


def record_late_usage(connection: Connection, job_ids: list[int]) -> int:
    """In the fold's transaction: for every binding invoice whose period received events of
    these ingestion jobs, re-price that period (its plan version, each event's meter
    version) and record what is still missing, per charge of the metric, as a
    `late_usage` adjustment. Returns how many it recorded.

    The subscriptions of the jobs' customers are locked FOR SHARE first: an issue in
    progress for one of them commits before the binding invoices are looked for, so its
    invoice is seen (lifecycle.py says why that keeps every event counted once).

    A period that cannot be re-priced now (a pricing error) does not hold the fold back
    and is not forgotten: a `late_usage` job retries it with backoff and, if it keeps
    failing, is dead-lettered where operators see it (the difference is idempotent, so a
    later run records exactly what is still missing)."""
    rows.share_subscriptions_of_jobs(connection, job_ids)
    recorded = 0
    for found in rows.binding_covering(connection, job_ids):
        try:
            with get_database().savepoint():
                recorded += adjust_late_usage(connection, found["invoice_id"], found["metric_key"])
        except ValidationFailed as error:
            log.warning(
                "late usage could not be priced now; queued for retry",
                extra={
                    "invoice_id": found["invoice_id"],
                    "metric_key": found["metric_key"],
                    "error": error.detail,
                },
            )
            queue.enqueue(connection, INVOICE_QUEUE, LATE_USAGE_JOB, found)
    if recorded:
        audit.record(
            connection,
            SYSTEM,
            action="adjustment.late_usage",
            entity="ingest_jobs",
            entity_id=",".join(str(j) for j in job_ids[:20]),
            state={"adjustments": recorded},
        )
    return recorded


def late_usage_job(job: queue.Job) -> None:
    """The retry of a late-usage re-pricing that failed in the fold (queue `invoice`)."""
    invoice_id, metric_key = str(job.payload["invoice_id"]), str(job.payload["metric_key"])
    with get_database().transaction() as connection:
        if rows.get(connection, invoice_id) is None:
            raise queue.GiveUp(f"no invoice {invoice_id}")
        recorded = adjust_late_usage(connection, invoice_id, metric_key)
        if recorded:
            audit.record(
                connection,
                SYSTEM,
                action="adjustment.late_usage",
                entity="invoice",
                entity_id=invoice_id,
                state={"adjustments": recorded, "retry_of_job": job.id},
            )


@dataclass(frozen=True)
class CorrectionCause:
    """Why a difference is recorded when a correction (not a late event) caused it: the
    correction, its reason, and the checksums of the period's events it added and those
    it superseded (core/domain/corrections.events_checksum)."""

    correction_id: str
    reason: str
    added_sha256: str
    superseded_sha256: str


def adjust_late_usage(
    connection: Connection,
    invoice_id: str,
    metric_key: str,
    *,
    cause: CorrectionCause | None = None,
) -> int:
    """Record what `metric_key` on a binding invoice's period is still missing; how many
    lines. The invoice row is locked first, so two aggregators folding late events of one
    period at once record the difference once: the second sees the first's adjustments.
    An invoice voided meanwhile records nothing (its replacement will bill the period)."""
    invoice = rows.get(connection, invoice_id, lock=True)
    assert invoice is not None
    if not status.binding(invoice["status"]):
        return 0
    start, end = invoice["period_start"], invoice["period_end"]
    context = pricing.context_for(connection, invoice["subscription_id"], Period(start, end))
    repriced = pricing.compute(connection, context)
    adjusted = {
        charge: Billed(ZERO if quantity is None else quantity, amount)
        for charge, (quantity, amount) in rows.period_adjusted(
            connection, invoice["subscription_id"], start, end
        ).items()
    }
    label = period_label(start, end)
    found = differences(repriced["lines"], usage_lines(invoice["lines"]), adjusted, metric_key)
    for difference in found:
        by_correction = (
            {}
            if cause is None
            else {
                "correction_id": cause.correction_id,
                "added_sha256": cause.added_sha256,
                "superseded_sha256": cause.superseded_sha256,
            }
        )
        rows.insert_adjustment(
            connection,
            {
                **by_correction,
                "id": new_id("adj"),
                "customer_id": invoice["customer_id"],
                "subscription_id": invoice["subscription_id"],
                "kind": "late_usage" if cause is None else "correction",
                "original_invoice_id": invoice["id"],
                "charge": difference.charge,
                "metric_key": difference.metric_key,
                "meter_version": difference.meter_version,
                "plan_version": invoice["plan_version"],
                "quantity_delta": difference.quantity,
                "amount_delta": difference.amount,
                "currency": invoice["currency"],
                "reason": "late_usage" if cause is None else cause.reason,
                "description": description(
                    label,
                    invoice["number"],
                    difference,
                    correction=None if cause is None else cause.correction_id,
                ),
            },
        )
    terms = terms_difference(
        invoice["lines"],
        adjusted,
        found,
        currency=invoice["currency"],
        commitment=Commitment.of(repriced.get("commitment")),
        discounts=coupons.discounts_of_invoice(connection, invoice),
    )
    if terms != 0:
        rows.insert_adjustment(
            connection,
            {
                "id": new_id("adj"),
                "customer_id": invoice["customer_id"],
                "subscription_id": invoice["subscription_id"],
                "kind": "late_usage" if cause is None else "correction",
                "original_invoice_id": invoice["id"],
                "charge": TERMS_KEY,
                "metric_key": None,
                "meter_version": None,
                "plan_version": invoice["plan_version"],
                "quantity_delta": None,
                "amount_delta": terms,
                "currency": invoice["currency"],
                "reason": "late_usage" if cause is None else cause.reason,
                "description": f"Commitment and discounts of {label} ({invoice['number']}) "
                f"on its {'late usage' if cause is None else 'correction'}",
            },
        )
        return len(found) + 1
    return len(found)
