"""Invoices: drafted from a fresh exact calculation plus the customer's pending
adjustments, issued with a gap-free number (then immutable: the database refuses any other
change), voided by status plus a credit entry; adjustments for late usage (found by the
aggregator, in the fold's transaction), manual corrections and credit carried forward."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.adapters import queue
from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import invoices as rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain import event_types
from core.domain.canonical import decimal_text
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.invoices import NewAdjustment
from core.domain.money import round_to_currency
from core.domain.periods import PERIOD_INDEX_MAX, Interval, Period, period_at, period_containing
from core.domain.pricing.engine import sha256
from core.services import audit, notify, pricing
from core.services.caller import SYSTEM, Caller
from core.services.listing import paginate

ZERO = Decimal(0)
INVOICE_QUEUE = "invoice"
EMAIL_JOB = "email"  # payload {"invoice_id"}: core.services.invoice_documents.send_email
LATE_USAGE_JOB = "late_usage"  # payload {"invoice_id", "metric_key"}: late_usage_job
log = logging.getLogger(__name__)


def email_job_key(invoice_id: str) -> str:
    return f"email-{invoice_id}"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _period_label(start: datetime, end: datetime) -> str:
    first = start.astimezone(UTC)
    if (first.day, first.hour, first.minute, first.second) == (1, 0, 0, 0) and (
        end - start
    ) < timedelta(days=32):
        return first.strftime("%B %Y")
    return f"{first:%Y-%m-%d} to {end.astimezone(UTC):%Y-%m-%d}"


def view(row: dict[str, Any]) -> dict[str, Any]:
    settled = row["status"] in {"paid", "void"}
    return {
        "id": row["id"],
        "number": row["number"],
        "status": row["status"],
        "customer_id": row["customer_id"],
        "subscription_id": row["subscription_id"],
        "period": {"start": row["period_start"], "end": row["period_end"]},
        "currency": row["currency"],
        "calculation_id": row["calculation_id"],
        "plan_code": row["plan_code"],
        "plan_version": row["plan_version"],
        "lines": row["lines"],
        "subtotal": row["subtotal"],
        "total": row["total"],
        "credit_carried": row["credit_carried"],
        "amount_due": ZERO if settled else row["total"],
        "checksum": row["checksum"],
        "net_terms_days": row["net_terms_days"],
        "due_at": row["due_at"],
        "issued_at": row["issued_at"],
        "paid_at": row["paid_at"],
        "voided_at": row["voided_at"],
        "void_reason": row["void_reason"],
        "created_at": row["created_at"],
    }


def _net_terms(customer: dict[str, Any]) -> int:
    custom = (customer.get("metadata") or {}).get("net_terms_days")
    if isinstance(custom, int | Decimal | str) and str(custom).isdigit():
        return int(custom)
    return settings().abaxus_net_terms_days


def _adjustment_line(number: int, adjustment: dict[str, Any]) -> dict[str, Any]:
    return {
        "line": number,
        "type": "adjustment",
        "adjustment_id": adjustment["id"],
        "kind": adjustment["kind"],
        "description": adjustment["description"],
        "original_invoice_id": adjustment["original_invoice_id"],
        "metric_key": adjustment["metric_key"],
        "meter_version": adjustment["meter_version"],
        "quantity": adjustment["quantity_delta"],
        "amount": adjustment["amount_delta"],
    }


def create_draft(
    caller: Caller, subscription_id: str, start: datetime, end: datetime
) -> tuple[dict[str, Any], bool]:
    """The period's draft (created from a fresh calculation and the pending adjustments),
    or the invoice the subscription already has for the period (created False)."""
    with get_database().transaction() as connection:
        existing = rows.for_period(connection, subscription_id, start, end)
        if existing is not None:
            return view(existing), False
        calculation = pricing.calculate(subscription_id, period_start=start, period_end=end)
        currency = calculation["currency"]
        customer = customer_rows.get(connection, calculation["customer_id"])
        assert customer is not None  # subscriptions reference customers
        pending = [
            a
            for a in rows.pending_adjustments(connection, customer["id"], lock=True)
            if a["currency"] == currency
        ]
        lines = [{**line, "type": "usage"} for line in calculation["lines"]]
        lines += [_adjustment_line(len(lines) + i, a) for i, a in enumerate(pending, start=1)]
        subtotal = Decimal(calculation["total"]) + sum((a["amount_delta"] for a in pending), ZERO)
        total, credit = max(subtotal, ZERO), max(-subtotal, ZERO)
        invoice_id = _new_id("inv")
        content = {
            "id": invoice_id,
            "customer_id": customer["id"],
            "subscription_id": subscription_id,
            "period": {"start": start, "end": end},
            "calculation_id": calculation["id"],
            "calculation_checksum": calculation["checksum"],
            "currency": currency,
            "lines": lines,
            "subtotal": subtotal,
            "total": total,
            "credit_carried": credit,
        }
        values = {
            "id": invoice_id,
            "customer_id": customer["id"],
            "subscription_id": subscription_id,
            "period_start": start,
            "period_end": end,
            "calculation_id": calculation["id"],
            "plan_code": calculation["plan_code"],
            "plan_version": calculation["plan_version"],
            "currency": currency,
            "lines": lines,
            "subtotal": subtotal,
            "total": total,
            "credit_carried": credit,
            "checksum": sha256(content),
            "net_terms_days": _net_terms(customer),
        }
        if not rows.insert_draft(connection, values):  # a concurrent request drafted it
            raced = rows.for_period(connection, subscription_id, start, end)
            assert raced is not None
            return view(raced), False
        rows.apply_adjustments(
            connection, [a["id"] for a in pending], invoice_id, datetime.now(UTC)
        )
        row = rows.get(connection, invoice_id)
        assert row is not None
        audit.record(
            connection,
            caller,
            action="invoice.drafted",
            entity="invoice",
            entity_id=invoice_id,
            state=view(row),
        )
        return view(row), True


def _locked(connection: Connection, invoice_id: str) -> dict[str, Any]:
    row = rows.get(connection, invoice_id, lock=True)
    if row is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    return row


def issue(caller: Caller, invoice_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Give the draft its number and make it final. Issuing an issued invoice again
    returns it unchanged."""
    now = now or datetime.now(UTC)
    with get_database().transaction() as connection:
        row = _locked(connection, invoice_id)
        if row["status"] == "void":
            raise Conflict(f"invoice {invoice_id} is void", code="invoice_void")
        if row["status"] != "draft":
            return view(row)
        series = f"{settings().abaxus_invoice_prefix}-{now.year}"
        sequence = rows.next_number(connection, series)
        issued = rows.change(
            connection,
            invoice_id,
            {
                "status": "issued",
                "series": series,
                "sequence": sequence,
                "number": f"{series}-{sequence:06d}",
                "issued_at": now,
                "due_at": now + timedelta(days=row["net_terms_days"]),
            },
        )
        if issued["credit_carried"] > 0:
            rows.insert_adjustment(
                connection,
                {
                    "id": _new_id("adj"),
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
    """A draft is voided and its adjustments go back to pending; an issued invoice keeps
    its number and is voided by status plus a credit entry for its total (recorded as
    applied to the voided invoice itself: a credit note, not a credit for the customer)."""
    now = datetime.now(UTC)
    with get_database().transaction() as connection:
        row = _locked(connection, invoice_id)
        if row["status"] == "void":
            return view(row)
        if row["status"] == "paid":
            raise Conflict(
                f"invoice {row['number']} is paid: refund it, then record an adjustment",
                code="invoice_paid",
            )
        voided = rows.change(
            connection, invoice_id, {"status": "void", "voided_at": now, "void_reason": reason}
        )
        if row["status"] == "draft":
            carried = [
                line["adjustment_id"] for line in row["lines"] if line.get("type") == "adjustment"
            ]
            rows.apply_adjustments(connection, carried, None, None)
        else:
            rows.insert_adjustment(
                connection,
                {
                    "id": _new_id("adj"),
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
        audit.record(
            connection,
            caller,
            action="invoice.voided",
            entity="invoice",
            entity_id=invoice_id,
            state=view(voided),
            changes={"status": {"before": row["status"], "after": "void"}},
        )
        return view(voided)


def get_invoice(invoice_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = rows.get(connection, invoice_id)
    if row is None:
        raise NotFound(f"no invoice {invoice_id!r}")
    return view(row)


def list_invoices(
    *, customer_id: str | None, status: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(
                connection, customer_id=customer_id, status=status, after=after, limit=n
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )
    return [view(row) for row in page], next_cursor


def explain(invoice_id: str) -> dict[str, Any]:
    """Per line: where its number comes from, and how to list the events behind it."""
    invoice = get_invoice(invoice_id)
    explained = []
    for line in invoice["lines"]:
        if line.get("type") == "adjustment":
            explained.append(
                {
                    "line": line["line"],
                    "type": "adjustment",
                    "adjustment_id": line["adjustment_id"],
                    "kind": line["kind"],
                    "description": line["description"],
                    "original_invoice_id": line["original_invoice_id"],
                    "meter_version": line["meter_version"],
                    "amount": line["amount"],
                }
            )
            continue
        events_url = (
            f"/v1/pricing/calculations/{invoice['calculation_id']}/lines/{line['line']}/events"
            if line["metric_key"] is not None
            else None
        )
        explained.append(
            {
                "line": line["line"],
                "type": "usage",
                "charge": line["charge"],
                "model": line["model"],
                "metric_key": line["metric_key"],
                "meter_version": line["meter_version"],
                "meter_versions": line["meter_versions"],
                "plan_code": invoice["plan_code"],
                "plan_version": invoice["plan_version"],
                "quantity": line["quantity"],
                "breakdown": line["breakdown"],
                "amount": line["amount"],
                "event_count": line["event_count"],
                "events_checksum": line["events_checksum"],
                "events_url": events_url,
            }
        )
    return {
        "invoice_id": invoice["id"],
        "number": invoice["number"],
        "calculation_id": invoice["calculation_id"],
        "checksum": invoice["checksum"],
        "lines": explained,
    }


def record_adjustment(caller: Caller, body: NewAdjustment) -> dict[str, Any]:
    with get_database().transaction() as connection:
        customer = customer_rows.get(connection, body.customer_id)
        if customer is None:
            raise ValidationFailed(
                f"no customer {body.customer_id!r}",
                code="unknown_customer",
                errors=[FieldError(("body", "customer_id"), "unknown customer")],
            )
        currency = body.currency or customer["currency"]
        created = rows.insert_adjustment(
            connection,
            {
                "id": _new_id("adj"),
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
        audit.record(
            connection,
            caller,
            action="adjustment.recorded",
            entity="adjustment",
            entity_id=created["id"],
            state=created,
        )
        return created


def list_adjustments(
    *, customer_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        return paginate(
            lambda after, n: rows.adjustments_page(
                connection, customer_id=customer_id, after=after, limit=n
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )


def record_late_usage(connection: Connection, job_ids: list[int]) -> int:
    """In the fold's transaction: for every issued invoice whose period received events of
    these ingestion jobs, re-price that period (its plan version, each event's meter
    version) and record the difference from what was invoiced and already adjusted, per
    charge of the metric, as a `late_usage` adjustment. Returns how many it recorded.

    A period that cannot be re-priced now (a pricing error) does not hold the fold back
    and is not forgotten: a `late_usage` job retries it with backoff and, if it keeps
    failing, is dead-lettered where operators see it (the difference is idempotent, so a
    later run records exactly what is still missing)."""
    recorded = 0
    for found in rows.issued_covering(connection, job_ids):
        try:
            with get_database().savepoint():
                recorded += _adjust_late_usage(connection, found["invoice_id"], found["metric_key"])
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
        recorded = _adjust_late_usage(connection, invoice_id, metric_key)
        if recorded:
            audit.record(
                connection,
                SYSTEM,
                action="adjustment.late_usage",
                entity="invoice",
                entity_id=invoice_id,
                state={"adjustments": recorded, "retry_of_job": job.id},
            )


def _adjust_late_usage(connection: Connection, invoice_id: str, metric_key: str) -> int:
    """Record what `metric_key` on an issued invoice is still missing; how many lines.
    The invoice row is locked first, so two aggregators folding late events of one period
    at once record the difference once: the second sees the first's adjustments."""
    invoice = rows.get(connection, invoice_id, lock=True)
    assert invoice is not None
    context = pricing.context_for(
        connection,
        invoice["subscription_id"],
        Period(invoice["period_start"], invoice["period_end"]),
    )
    repriced = pricing.compute(connection, context)
    invoiced = {
        (line["charge"], line["meter_version"]): line
        for line in invoice["lines"]
        if line.get("type") == "usage"
    }
    label = _period_label(invoice["period_start"], invoice["period_end"])
    recorded = 0
    for line in repriced["lines"]:
        if line["metric_key"] != metric_key:
            continue
        before = invoiced.get((line["charge"], line["meter_version"]))
        charge_key = f"{line['charge']}#{line['meter_version']}"
        prior_quantity, prior_amount = rows.adjusted_so_far(connection, invoice["id"], charge_key)
        quantity = (
            Decimal(line["quantity"])
            - Decimal(before["quantity"] if before else 0)
            - prior_quantity
        )
        amount = Decimal(line["amount"]) - Decimal(before["amount"] if before else 0) - prior_amount
        if quantity == 0 and amount == 0:
            continue
        sign = "+" if quantity >= 0 else ""
        change = f"{line['metric_key']} {sign}{decimal_text(quantity)}"
        rows.insert_adjustment(
            connection,
            {
                "id": _new_id("adj"),
                "customer_id": invoice["customer_id"],
                "subscription_id": invoice["subscription_id"],
                "kind": "late_usage",
                "original_invoice_id": invoice["id"],
                "charge": charge_key,
                "metric_key": line["metric_key"],
                "meter_version": line["meter_version"],
                "plan_version": invoice["plan_version"],
                "quantity_delta": quantity,
                "amount_delta": amount,
                "currency": invoice["currency"],
                "reason": "late_usage",
                "description": f"Late usage for {label} ({invoice['number']}): {change}",
            },
        )
        recorded += 1
    return recorded


@dataclass(frozen=True)
class DuePeriod:
    subscription_id: str
    start: datetime
    end: datetime


def due_periods(now: datetime | None = None, *, limit: int = 10_000) -> list[DuePeriod]:
    """Every subscription period that ended more than the grace ago and has no invoice
    yet (oldest first, at most `limit`: the next tick goes on)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=settings().abaxus_invoice_grace)
    due: list[DuePeriod] = []
    with get_database().transaction() as connection:
        for row in rows.subscriptions_to_bill(connection, cutoff):
            interval = Interval(row["interval"])
            invoiced = rows.invoiced_period_ends(connection, row["id"])
            for index in range(PERIOD_INDEX_MAX):
                period = period_at(row["starts_at"], interval, index)
                if row["ends_at"] is not None and period.start >= row["ends_at"]:
                    break
                end = min(period.end, row["ends_at"] or period.end)
                if end > cutoff:
                    break
                if end not in invoiced:
                    due.append(DuePeriod(row["id"], period.start, end))
                if len(due) >= limit:
                    return due
    return due


def request_due_invoices(now: datetime | None = None) -> int:
    """The billing tick: ask `calculate` for every due period (CloudEvent id derived from
    the subscription and period, so overlapping ticks ask the same question)."""
    due = due_periods(now)
    for item in due:
        notify.bus().emit(
            event_types.INVOICE_REQUESTED,
            {
                "subscription_id": item.subscription_id,
                "period_start": item.start.isoformat(),
                "period_end": item.end.isoformat(),
            },
            event_id=f"invoice-request-{item.subscription_id}-{item.end:%Y%m%dT%H%M%SZ}",
        )
    return len(due)


def on_calculation_completed(data: dict[str, Any]) -> dict[str, Any]:
    """Draft the period's invoice (the existing one if any) and, with auto-issue, issue
    it and announce `invoice.issued` (same CloudEvent id on every redelivery)."""
    period = data["period"]
    invoice, _ = create_draft(
        SYSTEM,
        str(data["subscription_id"]),
        datetime.fromisoformat(str(period["start"])),
        datetime.fromisoformat(str(period["end"])),
    )
    wants_issue = bool(data.get("issue", settings().abaxus_auto_issue))
    if wants_issue and invoice["status"] == "draft":
        invoice = issue(SYSTEM, invoice["id"])
    if invoice["status"] in {"issued", "paid", "payment_failed"}:
        notify.emit_after_commit(
            event_types.INVOICE_ISSUED,
            {
                "invoice_id": invoice["id"],
                "number": invoice["number"],
                "customer_id": invoice["customer_id"],
                "total": decimal_text(Decimal(invoice["total"])),  # JSON data: exact text
                "currency": invoice["currency"],
                "charge": bool(data.get("charge", True)),
            },
            event_id=f"invoice-issued-{invoice['id']}",
        )
    return invoice


def start_run(
    caller: Caller, period_end: datetime, *, issue_them: bool, charge_them: bool
) -> dict[str, Any]:
    """A bulk run: every subscription with a period ending exactly at `period_end` gets
    an invoice request through the same pipeline as the billing cycle (calculate ->
    invoice -> charge), carrying the run's flags."""
    run_id = _new_id("run")
    items = []
    with get_database().transaction() as connection:
        for row in rows.subscriptions_to_bill(connection, period_end):
            period = period_containing(
                row["starts_at"], Interval(row["interval"]), period_end - timedelta(microseconds=1)
            )
            end = min(period.end, row["ends_at"] or period.end)
            if end == period_end:
                items.append(
                    {
                        "run_id": run_id,
                        "subscription_id": row["id"],
                        "period_start": period.start,
                        "period_end": end,
                    }
                )
        rows.insert_run(
            connection,
            {"id": run_id, "period_end": period_end, "issue": issue_them, "charge": charge_them},
            items,
        )
        audit.record(
            connection,
            caller,
            action="invoice_run.started",
            entity="invoice_run",
            entity_id=run_id,
            state={"period_end": period_end, "subscriptions": len(items)},
        )
    # After the commit: the run exists before any answer comes back. A request lost here
    # is found again by the billing cycle (a period without an invoice) after the grace.
    get_database().after_commit(lambda: _request_run_items(run_id, items, issue_them, charge_them))
    return {"id": run_id, "period_end": period_end, "subscriptions": len(items)}


def _request_run_items(
    run_id: str, items: list[dict[str, Any]], issue_them: bool, charge_them: bool
) -> None:
    for item in items:
        notify.bus().emit(
            event_types.INVOICE_REQUESTED,
            {
                "subscription_id": item["subscription_id"],
                "period_start": item["period_start"].isoformat(),
                "period_end": item["period_end"].isoformat(),
                "run_id": run_id,
                "issue": issue_them,
                "charge": charge_them,
            },
            event_id=f"invoice-request-{run_id}-{item['subscription_id']}",
        )


def run_status(run_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        run = rows.get_run(connection, run_id)
        if run is None:
            raise NotFound(f"no invoice run {run_id!r}")
        progress = rows.run_progress(connection, run_id)
        failures = rows.run_failures(connection, run_id)
    total = sum(progress.values())
    wanted = {"issued", "paid", "payment_failed"} if run["issue"] else {"draft"}
    done = sum(n for status, n in progress.items() if status in wanted or status == "paid")
    return {
        "id": run_id,
        "period_end": run["period_end"],
        "issue": run["issue"],
        "charge": run["charge"],
        "subscriptions": total,
        "by_status": progress,
        "failed": len(failures),
        "failures": failures,
        "complete": done + len(failures) >= total,
        "created_at": run["created_at"],
    }
