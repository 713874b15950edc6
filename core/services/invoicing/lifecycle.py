"""An invoice's life: drafted from an exact calculation, live (re-priced) until issued,
issued with a gap-free number and then immutable, voided (and then replaceable).

How every committed event is counted exactly once across an invoice and the adjustments
that follow it (docs/concepts.md, "Every event counted once"): issuing and voiding lock
the subscription row before they read anything, and the aggregator's fold locks the same
row FOR SHARE before it looks for binding invoices covering the events it folds. So an
event is either visible to the issue's pricing — and billed by the invoice — or committed
after it, and then its fold waits for the issue to commit, sees the invoice binding and
records the difference as late usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters import queue
from core.adapters.postgres import calculations as calculation_rows
from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import invoices as rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain.errors import Conflict, NotFound
from core.domain.invoices import numbering, status
from core.domain.invoices.assembly import (
    Assembly,
    AssemblyInputs,
    CarriedAdjustment,
    assemble,
    carried_ids,
)
from core.domain.invoices.commitments import Commitment
from core.domain.invoices.status import InvoiceStatus
from core.domain.invoices.voiding import AdjustmentState, void_plan
from core.domain.periods import Period
from core.domain.pricing.engine import sha256
from core.services import audit, completeness, pricing
from core.services.caller import Caller
from core.services.catalog import coupons
from core.services.invoicing import EMAIL_JOB, INVOICE_QUEUE, email_job_key, new_id
from core.services.invoicing.views import view

ADJUSTMENTS_KIND = "adjustments"


NET_TERMS_DAYS_MAX = 3650


def _net_terms(customer: dict[str, Any]) -> int:
    """A customer's `metadata.net_terms_days` when it is a whole number of days (ASCII
    digits: "²" is a digit to str.isdigit() and not to int(); at most ten years, so that
    the due date is an instant), else the deployment's."""
    custom = str((customer.get("metadata") or {}).get("net_terms_days", ""))
    if custom.isascii() and custom.isdigit() and int(custom) <= NET_TERMS_DAYS_MAX:
        return int(custom)
    return settings().abaxus_net_terms_days


def carried(pending: list[dict[str, Any]]) -> tuple[CarriedAdjustment, ...]:
    return tuple(
        CarriedAdjustment(
            id=a["id"],
            kind=a["kind"],
            description=a["description"],
            amount=a["amount_delta"],
            original_invoice_id=a["original_invoice_id"],
            metric_key=a["metric_key"],
            meter_version=a["meter_version"],
            quantity=a["quantity_delta"],
        )
        for a in pending
    )


@dataclass(frozen=True)
class _Priced:
    calculation: dict[str, Any] | None  # None for an adjustments invoice
    fingerprint: str | None
    repriced: bool


def _price(
    connection: Connection,
    subscription_id: str,
    period: Period,
    *,
    fingerprint: str | None = None,
    calculation_id: str | None = None,
) -> _Priced:
    """The period's calculation: a known one (the draft's, or the one `calculate` just
    made) when the inputs fingerprint taken with it is still the current one — no scan —,
    else a fresh exact one. The current fingerprint is read first, in a statement of its
    own, so what is priced contains what was fingerprinted."""
    context = pricing.context_for(connection, subscription_id, period)
    current = pricing.inputs_fingerprint(connection, context)
    if calculation_id is not None:
        known_fingerprint = fingerprint or calculation_rows.fingerprint_of(
            connection, calculation_id
        )
        if current == known_fingerprint:
            known = calculation_rows.get(connection, calculation_id)
            if known is not None:
                return _Priced(known, current, repriced=False)
    return _Priced(pricing.store(connection, context, fingerprint=current), current, repriced=True)


def _checksum(row: dict[str, Any], priced: _Priced, assembly: Assembly) -> str:
    calculation = priced.calculation
    return sha256(
        {
            "id": row["id"],
            "kind": row["kind"],
            "customer_id": row["customer_id"],
            "subscription_id": row["subscription_id"],
            "period": {"start": row["period_start"], "end": row["period_end"]},
            "replaces": row["replaces"],
            "calculation_id": None if calculation is None else calculation["id"],
            "calculation_checksum": None if calculation is None else calculation["checksum"],
            "currency": row["currency"],
            "lines": list(assembly.lines),
            "subtotal": assembly.subtotal,
            "total": assembly.total,
            "credit_carried": assembly.credit_carried,
        }
    )


def _assembled(
    connection: Connection, row: dict[str, Any], priced: _Priced, *, claim: bool
) -> dict[str, Any]:
    """The invoice's content from its calculation and the adjustments it would carry now
    (locked when `claim`: issuing takes them)."""
    pending = rows.pending_adjustments(connection, row["customer_id"], row["currency"], lock=claim)
    calculation = priced.calculation
    assembly = assemble(
        AssemblyInputs(
            currency=row["currency"],
            usage_lines=tuple(calculation["lines"]) if calculation is not None else (),
            adjustments=carried(pending),
            commitment=None
            if calculation is None
            else Commitment.of(calculation.get("commitment")),
            discounts=()
            if row["subscription_id"] is None
            else coupons.discounts_of_invoice(connection, row),
        )
    )
    values: dict[str, Any] = {}
    if calculation is not None:
        # Every region's events up to the period's end here, or (bill_available) what lacks.
        found = completeness.require_complete(connection, row["period_end"])
        values |= {
            "calculation_id": calculation["id"],
            "inputs_fingerprint": priced.fingerprint,
            "complete": found.complete,
            "regions_lacking": list(found.lacking),
        }
        if priced.repriced or row.get("priced_at") is None:
            values["priced_at"] = datetime.now(UTC)
    elif pending:  # an adjustments invoice spans its oldest adjustment to now
        values["period_start"] = min(a["created_at"] for a in pending)
        values["period_end"] = max(datetime.now(UTC), values["period_start"])
    return values | {
        "lines": list(assembly.lines),
        "subtotal": assembly.subtotal,
        "total": assembly.total,
        "credit_carried": assembly.credit_carried,
        "checksum": _checksum(row | values, priced, assembly),
    }


def create_draft(
    caller: Caller,
    subscription_id: str,
    start: datetime,
    end: datetime,
    *,
    replace_void: bool = True,
    calculation_id: str | None = None,
    issue_now: bool = False,
) -> tuple[dict[str, Any], bool]:
    """The period's draft, created from an exact calculation and the adjustments it would
    carry; or the period's live invoice (created False). When the period's invoices are
    all void, a replacement (`replaces` the latest) — unless `replace_void` is False (the
    billing cycle never re-invoices a period someone voided). `calculation_id`: the
    period's calculation just made by `calculate`, used when nothing changed since.
    `issue_now` (the billing cycle with auto-issue) issues the new invoice in the same
    transaction, from the same pricing: the subscription is locked before it is priced,
    as issuing always does, so the pricing is the issue's own."""
    with get_database().transaction() as connection:
        existing = rows.for_period(connection, subscription_id, start, end)
        live = [row for row in existing if status.live(row["status"])]
        if live:
            return view(live[0]), False
        if existing and not replace_void:
            return view(existing[-1]), False
        period = Period(start, end)
        if issue_now:
            rows.lock_subscription(connection, subscription_id)
        priced = _price(connection, subscription_id, period, calculation_id=calculation_id)
        calculation = priced.calculation
        assert calculation is not None
        customer = customer_rows.get(connection, calculation["customer_id"])
        assert customer is not None  # subscriptions reference customers
        row: dict[str, Any] = {
            "id": new_id("inv"),
            "kind": "subscription",
            "customer_id": customer["id"],
            "subscription_id": subscription_id,
            "period_start": start,
            "period_end": end,
            "plan_code": calculation["plan_code"],
            "plan_version": calculation["plan_version"],
            "currency": calculation["currency"],
            "replaces": existing[-1]["id"] if existing else None,
            "net_terms_days": _net_terms(customer),
        }
        row |= _assembled(connection, row, priced, claim=issue_now)
        if not rows.insert_draft(connection, row):  # a concurrent request drafted it
            raced = rows.for_period(connection, subscription_id, start, end)
            return view(raced[-1]), False
        created = rows.get(connection, row["id"])
        assert created is not None
        audit.record(
            connection,
            caller,
            action="invoice.drafted",
            entity="invoice",
            entity_id=row["id"],
            state=view(created),
        )
        if issue_now:
            content = {k: created[k] for k in ("lines", "subtotal", "total", "credit_carried")}
            return _finish_issue(connection, caller, created, content, datetime.now(UTC)), True
        return view(created), True


def create_adjustments_draft(
    caller: Caller, customer_id: str, currency: str
) -> dict[str, Any] | None:
    """The customer's open adjustments invoice in `currency` (a standalone invoice for
    adjustments no subscription invoice will carry), created when its pending adjustments
    add up to a charge; None when they do not."""
    with get_database().transaction() as connection:
        existing = rows.open_adjustments_draft(connection, customer_id, currency)
        if existing is not None:
            return view(existing)
        customer = customer_rows.get(connection, customer_id)
        if customer is None:
            raise NotFound(f"no customer {customer_id!r}")
        pending = rows.pending_adjustments(connection, customer_id, currency)
        if sum((a["amount_delta"] for a in pending), Decimal(0)) <= 0:
            return None
        now = datetime.now(UTC)
        row: dict[str, Any] = {
            "id": new_id("inv"),
            "kind": ADJUSTMENTS_KIND,
            "customer_id": customer_id,
            "subscription_id": None,
            "period_start": now,
            "period_end": now,
            "plan_code": None,
            "plan_version": None,
            "calculation_id": None,
            "currency": currency,
            "replaces": None,
            "net_terms_days": _net_terms(customer),
        }
        row |= _assembled(connection, row, _Priced(None, None, repriced=False), claim=False)
        if not rows.insert_draft(connection, row):
            raced = rows.open_adjustments_draft(connection, customer_id, currency)
            return None if raced is None else view(raced)
        created = rows.get(connection, row["id"])
        assert created is not None
        audit.record(
            connection,
            caller,
            action="invoice.drafted",
            entity="invoice",
            entity_id=row["id"],
            state=view(created),
        )
        return view(created)


def _locked(connection: Connection, invoice_id: str) -> dict[str, Any]:
    """The invoice, locked after its subscription (the order every writer takes)."""
    found = rows.get(connection, invoice_id)
    if found is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    if found["subscription_id"] is not None:
        rows.lock_subscription(connection, found["subscription_id"])
    row = rows.get(connection, invoice_id, lock=True)
    assert row is not None  # invoices are never deleted
    return row


def _reprice(connection: Connection, row: dict[str, Any], *, claim: bool) -> dict[str, Any]:
    priced = (
        _price(
            connection,
            row["subscription_id"],
            Period(row["period_start"], row["period_end"]),
            fingerprint=row["inputs_fingerprint"],
            calculation_id=row["calculation_id"],
        )
        if row["kind"] == "subscription"
        else _Priced(None, None, repriced=False)
    )
    return _assembled(connection, row, priced, claim=claim)


def refresh(caller: Caller, invoice_id: str) -> dict[str, Any]:
    """Re-price a draft from the current exact usage and pending adjustments (a no-op,
    without a scan, when nothing it was priced from changed)."""
    with get_database().transaction() as connection:
        row = _locked(connection, invoice_id)
        if not status.refreshable(row["status"]):
            raise Conflict(
                f"invoice {invoice_id} is {row['status']}: only a draft is refreshed",
                code=f"invoice_{row['status']}",
            )
        values = _reprice(connection, row, claim=False)
        if values["checksum"] == row["checksum"] and "priced_at" not in values:
            return view(row)
        refreshed = rows.change(connection, invoice_id, values)
        audit.record(
            connection,
            caller,
            action="invoice.refreshed",
            entity="invoice",
            entity_id=invoice_id,
            state=view(refreshed),
            changes={"total": {"before": row["total"], "after": refreshed["total"]}},
        )
        return view(refreshed)


def issue(caller: Caller, invoice_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Re-price the draft (from the current exact calculation and the adjustments it
    carries), give it the next number of its series and make it final. Issuing a binding
    invoice again returns it unchanged."""
    now = now or datetime.now(UTC)
    with get_database().transaction() as connection:
        row = _locked(connection, invoice_id)
        if status.binding(row["status"]):
            return view(row)
        status.require(row["status"], InvoiceStatus.ISSUED, invoice_id)
        values = _reprice(connection, row, claim=True)
        return _finish_issue(connection, caller, row, values, now)


def _finish_issue(
    connection: Connection,
    caller: Caller,
    row: dict[str, Any],
    values: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Number the invoice and make it final with its assembled content `values`: the
    adjustments it carries are taken, a credit left over is carried forward, the email is
    queued. In the transaction that locked its subscription and priced it."""
    invoice_id = row["id"]
    carries = carried_ids(values["lines"])
    if row["kind"] == ADJUSTMENTS_KIND and not carries:
        raise Conflict(
            f"invoice {invoice_id} has nothing left to carry: another invoice took its adjustments",
            code="nothing_to_invoice",
        )
    series = numbering.series(settings().abaxus_invoice_prefix, now)
    sequence = rows.next_number(connection, series)
    issued = rows.change(
        connection,
        invoice_id,
        {
            **values,
            "status": InvoiceStatus.ISSUED.value,
            "series": series,
            "sequence": sequence,
            "number": numbering.number(series, sequence),
            "issued_at": now,
            "due_at": now + timedelta(days=row["net_terms_days"]),
        },
    )
    rows.apply_adjustments(connection, carries, invoice_id, now)
    if issued["credit_carried"] > 0:
        rows.insert_adjustment(
            connection,
            {
                "id": new_id("adj"),
                "customer_id": issued["customer_id"],
                "subscription_id": issued["subscription_id"],
                "kind": "credit_carried",
                "original_invoice_id": invoice_id,
                "amount_delta": -issued["credit_carried"],
                "currency": issued["currency"],
                "reason": f"credit carried forward from {issued['number']}",
                "description": f"Credit carried forward from {issued['number']}",
            },
        )
    if settings().smtp_url:  # emailed by a job: a failed email never blocks the issue
        queue.enqueue(
            connection,
            INVOICE_QUEUE,
            EMAIL_JOB,
            {"invoice_id": invoice_id},
            dedupe_key=email_job_key(invoice_id),
        )
    audit.record(
        connection,
        caller,
        action="invoice.issued",
        entity="invoice",
        entity_id=invoice_id,
        state=view(issued),
    )
    return view(issued)


def void(caller: Caller, invoice_id: str, reason: str) -> dict[str, Any]:
    """Void a draft (by status) or a binding invoice: it keeps its number, a `void_credit`
    of -total is applied to it (a credit note offsetting the receivable), the adjustments
    it carried are pending again and those born of it are cancelled or reversed
    (core/domain/invoices/voiding.py). Its period may then be invoiced again."""
    now = datetime.now(UTC)
    with get_database().transaction() as connection:
        row = _locked(connection, invoice_id)
        if row["status"] == InvoiceStatus.VOID:
            return view(row)
        if row["status"] == InvoiceStatus.PAID:
            raise Conflict(
                f"invoice {row['number']} is paid: refund it, then record an adjustment",
                code="invoice_paid",
            )
        status.require(row["status"], InvoiceStatus.VOID, invoice_id)
        voided = rows.change(
            connection,
            invoice_id,
            {"status": InvoiceStatus.VOID.value, "voided_at": now, "void_reason": reason},
        )
        effects: dict[str, Any] = {}
        if status.binding(row["status"]):
            effects = _void_effects(connection, row, reason, now)
        audit.record(
            connection,
            caller,
            action="invoice.voided",
            entity="invoice",
            entity_id=invoice_id,
            state=view(voided),
            changes={"status": {"before": row["status"], "after": "void"}, **effects},
        )
        return view(voided)


def _void_effects(
    connection: Connection, row: dict[str, Any], reason: str, now: datetime
) -> dict[str, Any]:
    invoice_id = row["id"]
    around = rows.adjustments_around(connection, invoice_id)
    plan = void_plan(
        invoice_id,
        [
            AdjustmentState(
                id=a["id"],
                kind=a["kind"],
                original_invoice_id=a["original_invoice_id"],
                applied_invoice_id=a["applied_invoice_id"],
                cancelled=a["cancelled_at"] is not None,
                carrier_binding=a["carrier_status"] is not None
                and status.binding(a["carrier_status"]),
            )
            for a in around
        ],
    )
    rows.release_adjustments(connection, plan.release)
    rows.cancel_adjustments(connection, plan.cancel, f"{row['number']} voided: {reason}", now)
    by_id = {a["id"]: a for a in around}
    for reversed_id in plan.reverse:
        original = by_id[reversed_id]
        rows.insert_adjustment(
            connection,
            {
                "id": new_id("adj"),
                "customer_id": original["customer_id"],
                "subscription_id": original["subscription_id"],
                "kind": "reversal",
                "reverses": reversed_id,
                "original_invoice_id": invoice_id,
                "charge": original["charge"],
                "metric_key": original["metric_key"],
                "meter_version": original["meter_version"],
                "plan_version": original["plan_version"],
                "quantity_delta": None
                if original["quantity_delta"] is None
                else -original["quantity_delta"],
                "amount_delta": -original["amount_delta"],
                "currency": original["currency"],
                "reason": f"{row['number']} voided",
                "description": f"Reversal of {original['description']} ({row['number']} voided)",
            },
        )
    rows.insert_adjustment(
        connection,
        {
            "id": new_id("adj"),
            "customer_id": row["customer_id"],
            "subscription_id": row["subscription_id"],
            "kind": "void_credit",
            "original_invoice_id": invoice_id,
            "amount_delta": -row["total"],
            "currency": row["currency"],
            "reason": reason,
            "description": f"Credit note: {row['number']} voided ({reason})",
            "applied_invoice_id": invoice_id,
            "applied_at": now,
        },
    )
    return {
        "released": list(plan.release),
        "cancelled": list(plan.cancel),
        "reversed": list(plan.reverse),
    }
