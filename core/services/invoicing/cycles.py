"""The billing cycle and bulk runs: which periods are due, asking `calculate` for them,
drafting (and issuing) on `calculation.completed`, keeping drafts live, and billing the
adjustments no subscription invoice will carry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from core.adapters.postgres import billing_cycles as rows
from core.adapters.postgres import invoices as invoice_rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain import event_types
from core.domain.canonical import decimal_text
from core.domain.errors import AbaxusError, NotFound
from core.domain.invoices import status
from core.domain.periods import (
    PERIOD_INDEX_MAX,
    Interval,
    period_at,
    period_containing,
    period_index,
)
from core.services import audit, notify
from core.services.caller import SYSTEM, Caller
from core.services.invoicing import lifecycle, new_id

log = logging.getLogger(__name__)
REFRESH_BATCH = 500
STRANDED_BATCH = 500


@dataclass(frozen=True)
class DuePeriod:
    subscription_id: str
    start: datetime
    end: datetime


def due_periods(now: datetime | None = None, *, limit: int = 10_000) -> list[DuePeriod]:
    """Every subscription period that ended more than the grace ago and has no invoice
    yet (oldest first, at most `limit`: the next tick goes on). A voided period counts as
    invoiced: re-invoicing it is asked for explicitly."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=settings().abaxus_invoice_grace)
    due: list[DuePeriod] = []
    with get_database().transaction() as connection:
        for row in rows.subscriptions_to_bill(connection, cutoff):
            interval = Interval(row["interval"])
            invoiced = rows.invoiced_period_ends(connection, row["id"])
            first = period_index(row["anchor_at"], interval, row["starts_at"])
            for index in range(first, PERIOD_INDEX_MAX):
                period = period_at(row["anchor_at"], interval, index)
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
    """Ask `calculate` for every due period (CloudEvent id derived from the subscription
    and period, so overlapping ticks ask the same question)."""
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


def announce_issued(invoice: dict[str, Any], *, charge: bool) -> None:
    """`invoice.issued` once the commit holding the issue is done (same id every time)."""
    notify.emit_after_commit(
        event_types.INVOICE_ISSUED,
        {
            "invoice_id": invoice["id"],
            "number": invoice["number"],
            "customer_id": invoice["customer_id"],
            "total": decimal_text(Decimal(invoice["total"])),  # JSON data: exact text
            "currency": invoice["currency"],
            "charge": charge,
        },
        event_id=f"invoice-issued-{invoice['id']}",
    )


def on_calculation_completed(data: dict[str, Any]) -> dict[str, Any]:
    """Draft the period's invoice (the existing one if any; a voided period is left
    alone) and, with auto-issue, issue it and announce `invoice.issued` (same CloudEvent id
    on every redelivery)."""
    period = data["period"]
    wants_issue = bool(data.get("issue", settings().abaxus_auto_issue))
    invoice, created = lifecycle.create_draft(
        SYSTEM,
        str(data["subscription_id"]),
        datetime.fromisoformat(str(period["start"])),
        datetime.fromisoformat(str(period["end"])),
        replace_void=False,
        calculation_id=str(data["calculation_id"]) if data.get("calculation_id") else None,
        issue_now=wants_issue,
    )
    if wants_issue and not created and status.issuable(invoice["status"]):
        invoice = lifecycle.issue(SYSTEM, invoice["id"])
    if status.binding(invoice["status"]):
        announce_issued(invoice, charge=bool(data.get("charge", True)))
    return invoice


def refresh_drafts(batch: int = REFRESH_BATCH) -> int:
    """Re-price every draft whose inputs changed (one transaction each; a draft that
    cannot be priced now is logged and left for the next tick). Returns how many drafts it
    looked at."""
    after: str | None = None
    seen = 0
    while True:
        with get_database().transaction() as connection:
            ids = invoice_rows.drafts(connection, after=after, limit=batch)
        for invoice_id in ids:
            try:
                with get_database().savepoint():
                    lifecycle.refresh(SYSTEM, invoice_id)
            except AbaxusError as error:  # issued or voided meanwhile, or unpriceable now
                log.warning(
                    "draft not refreshed", extra={"invoice_id": invoice_id, "code": error.code}
                )
        seen += len(ids)
        if len(ids) < batch:
            return seen
        after = ids[-1]


def invoice_stranded_adjustments(now: datetime | None = None) -> list[dict[str, Any]]:
    """Adjustments no subscription invoice will ever carry (the customer's subscriptions in
    that currency have all ended and their final invoices are binding) are billed by a
    standalone adjustments invoice, once they are older than the invoice grace and add
    up to a charge (credits wait for the customer's next invoice). Issued at once with
    ABAXUS_AUTO_ISSUE, and announced like any issued invoice."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=settings().abaxus_invoice_grace)
    with get_database().transaction() as connection:
        stranded = invoice_rows.stranded_adjustments(connection, cutoff, STRANDED_BATCH)
    invoices = []
    for customer_id, currency in stranded:
        try:
            with get_database().savepoint():
                invoice = lifecycle.create_adjustments_draft(SYSTEM, customer_id, currency)
                if invoice is None:
                    continue
                if settings().abaxus_auto_issue and status.issuable(invoice["status"]):
                    invoice = lifecycle.issue(SYSTEM, invoice["id"])
                    announce_issued(invoice, charge=True)
        except AbaxusError as error:
            log.warning(
                "adjustments invoice not made",
                extra={"customer_id": customer_id, "currency": currency, "code": error.code},
            )
            continue
        invoices.append(invoice)
    return invoices


def start_run(
    caller: Caller, period_end: datetime, *, issue_them: bool, charge_them: bool
) -> dict[str, Any]:
    """A bulk run: every subscription with a period ending exactly at `period_end` gets
    an invoice request through the same pipeline as the billing cycle (calculate ->
    invoice -> charge), carrying the run's flags."""
    run_id = new_id("run")
    items = []
    with get_database().transaction() as connection:
        for row in rows.subscriptions_to_bill(connection, period_end):
            period = period_containing(
                row["anchor_at"], Interval(row["interval"]), period_end - timedelta(microseconds=1)
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


def _run_item_done(state: str, *, issue: bool) -> bool:
    """A run's item is done when its invoice is where the run takes it (binding when the
    run issues, at least a draft otherwise) or was voided (nothing more will happen)."""
    if state == "requested":
        return False
    if status.binding(state) or not status.live(state):
        return True
    return not issue


def run_status(run_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        run = rows.get_run(connection, run_id)
        if run is None:
            raise NotFound(f"no invoice run {run_id!r}")
        progress = rows.run_progress(connection, run_id)
        failures = rows.run_failures(connection, run_id)
    total = sum(progress.values())
    done = sum(n for state, n in progress.items() if _run_item_done(state, issue=run["issue"]))
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
