"""Dashboard-invoice parity: for a customer and a billing period, per metric, the real-time
value, the exact value and what invoices billed (the binding invoice's lines plus the
late-usage adjustments and reversals recorded for the period) side by side — equal, or
the reasons they are not (aggregation lag with its age, late usage carried as `adj_…`,
an approximate percentile, a period not invoiced yet or invoiced by a draft)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from core.adapters.postgres import reconciliation as rows
from core.adapters.postgres.database import get_database
from core.services import usage

ZERO = Decimal(0)


def period_parity(
    *, customer_id: str, start: datetime, end: datetime, now: datetime | None = None
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    parity = usage.parity(customer_id=customer_id, start=start, end=end)
    with get_database().transaction() as connection:
        invoices = rows.period_invoices(connection, customer_id, start, end)
        adjustments = rows.period_adjustments(connection, [i["id"] for i in invoices])
    binding = [i for i in invoices if i["status"] in {"issued", "paid", "payment_failed"}]
    drafts = [i for i in invoices if i["status"] == "draft"]
    invoice = binding[0] if binding else (drafts[0] if drafts else None)
    metrics = []
    for item in parity["data"]:
        key = item["metric_key"]
        on_invoice = (
            sum(
                (
                    Decimal(str(line["quantity"]))
                    for line in invoice["lines"]
                    if line.get("type") == "usage" and line.get("metric_key") == key
                ),
                ZERO,
            )
            if invoice is not None
            else None
        )
        adjusted = [a for a in adjustments if a["metric_key"] == key]
        billed = (
            None
            if on_invoice is None
            else on_invoice + sum((a["quantity_delta"] for a in adjusted), ZERO)
        )
        metrics.append(
            {
                "metric_key": key,
                "realtime": item["realtime"]["value"],
                "exact": item["exact"]["value"],
                "invoiced": on_invoice,
                "adjusted": sum((a["quantity_delta"] for a in adjusted), ZERO),
                "billed": billed,
                "event_count": item["exact"]["event_count"],
                "checksum": item["exact"]["checksum"],
                "status": item["status"],
                "equal": item["status"] == "agree" and billed == item["exact"]["value"],
                "reasons": _reasons(item, invoice, adjusted, parity["as_of"], now),
            }
        )
    return {
        "customer_id": customer_id,
        "period": {"start": start, "end": end},
        "as_of": parity["as_of"],
        "invoice": None
        if invoice is None
        else {"id": invoice["id"], "number": invoice["number"], "status": invoice["status"]},
        "equal": all(m["equal"] for m in metrics),
        "metrics": metrics,
    }


def _reasons(
    item: dict[str, Any],
    invoice: dict[str, Any] | None,
    adjusted: list[dict[str, Any]],
    as_of: datetime,
    now: datetime,
) -> list[dict[str, Any]]:
    reasons: list[dict[str, Any]] = []
    if item["status"] == "catching_up":
        reasons.append(
            {
                "kind": "aggregation_lag",
                "pending_event_count": item["pending_event_count"],
                "refold_pending": item["refold_pending"],
                "age_seconds": max(0.0, round((now - as_of).total_seconds(), 1)),
            }
        )
    if item["status"] == "drift":
        reasons.append({"kind": "drift", "difference": item["difference"]})
    if item["realtime"]["approximate"]:
        reasons.append({"kind": "approximate_percentile", "relative_error_bound": "0.01"})
    if invoice is None:
        reasons.append({"kind": "not_invoiced"})
    elif invoice["status"] == "draft":
        reasons.append({"kind": "draft", "invoice_id": invoice["id"]})
    for adjustment in adjusted:
        reasons.append(
            {
                "kind": "late_usage" if adjustment["kind"] == "late_usage" else "reversal",
                "adjustment_id": adjustment["id"],
                "quantity": adjustment["quantity_delta"],
                "carried_by": adjustment["applied_invoice_id"],
                "carried_by_number": adjustment["carried_by_number"],
            }
        )
    return reasons
