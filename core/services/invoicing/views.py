"""What the API shows of invoices and adjustments: views of rows, listings, explain."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.adapters.postgres import invoices as rows
from core.adapters.postgres.database import get_database
from core.domain.errors import NotFound
from core.domain.invoices import status
from core.services.listing import paginate

ZERO = Decimal(0)
ADJUSTMENT_FIELDS = (
    "id",
    "customer_id",
    "subscription_id",
    "kind",
    "original_invoice_id",
    "charge",
    "metric_key",
    "meter_version",
    "plan_version",
    "quantity_delta",
    "amount_delta",
    "currency",
    "reason",
    "description",
    "applied_invoice_id",
    "applied_at",
    "reverses",
    "cancelled_at",
    "cancel_reason",
    "correction_id",
    "added_sha256",
    "superseded_sha256",
    "created_at",
)


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "number": row["number"],
        "status": row["status"],
        "customer_id": row["customer_id"],
        "subscription_id": row["subscription_id"],
        "period": {"start": row["period_start"], "end": row["period_end"]},
        "currency": row["currency"],
        "calculation_id": row["calculation_id"],
        "priced_at": row["priced_at"],
        "plan_code": row["plan_code"],
        "plan_version": row["plan_version"],
        "lines": row["lines"],
        "subtotal": row["subtotal"],
        "total": row["total"],
        "credit_carried": row["credit_carried"],
        "amount_due": ZERO if status.settled(row["status"]) else row["total"],
        "checksum": row["checksum"],
        "replaces": row["replaces"],
        "net_terms_days": row["net_terms_days"],
        "due_at": row["due_at"],
        "issued_at": row["issued_at"],
        "paid_at": row["paid_at"],
        "voided_at": row["voided_at"],
        "void_reason": row["void_reason"],
        "created_at": row["created_at"],
        "complete": row["complete"],
        "regions_lacking": list(row["regions_lacking"]),
    }


def adjustment_view(row: dict[str, Any]) -> dict[str, Any]:
    """An adjustment, with the invoice carrying it (`carried_by`: id, number, status) or
    null while it is pending (or cancelled)."""
    shown = {name: row[name] for name in ADJUSTMENT_FIELDS}
    shown["status"] = (
        "cancelled"
        if row["cancelled_at"] is not None
        else "pending"
        if row["applied_invoice_id"] is None
        else "applied"
    )
    shown["carried_by"] = (
        None
        if row["applied_invoice_id"] is None
        else {
            "invoice_id": row["applied_invoice_id"],
            "number": row.get("carried_by_number"),
            "status": row.get("carried_by_status"),
        }
    )
    return shown


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


def list_adjustments(
    *, customer_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.adjustments_page(
                connection, customer_id=customer_id, after=after, limit=n
            ),
            cursor=cursor,
            limit=limit,
            key="id",
        )
    return [adjustment_view(row) for row in page], next_cursor


def explain(invoice_id: str) -> dict[str, Any]:
    """Per line: where its number comes from, and how to list the events behind it."""
    invoice = get_invoice(invoice_id)
    explained = []
    for line in invoice["lines"]:
        if line.get("type") in {"commitment", "discount"}:  # they explain themselves
            explained.append(dict(line))
            continue
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
