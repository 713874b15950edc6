"""An invoice document: every string the HTML, text and PDF forms of an invoice show,
formatted once from the invoice as the API shows it (`views.view` after canonical
JSON: numbers as decimal strings, instants as RFC 3339 text). Pure; the formatting rules
are core/domain/documents.py, the layout is core/templates/invoice.*.j2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.domain.documents import (
    Breakdown,
    breakdown,
    decimal_of,
    format_amount,
    format_date,
    format_exact,
    format_period,
    format_price,
)

MODEL_NAMES: Mapping[str, str] = {
    "per_unit": "per unit",
    "tiered": "graduated tiers",
    "volume": "volume tiers",
    "package": "packages",
    "flat_fee": "flat fee",
    "matrix": "price matrix",
    "custom_formula": "formula",
}
UNIT_PRICE_KEYS: Mapping[str, str] = {
    "per_unit": "unit_price",
    "volume": "unit_price",
    "flat_fee": "amount_per_period",
}
ADJUSTMENT_KINDS: Mapping[str, str] = {
    "late_usage": "Late usage",
    "manual": "Manual adjustment",
    "void_credit": "Credit for a voided invoice",
    "credit_carried": "Credit carried from an earlier invoice",
    "reversal": "Reversal",
}
TERM_KINDS: Mapping[str, str] = {
    "minimum_commitment": "Minimum commitment true-up",
    "maximum_charge": "Maximum charge cap",
}


@dataclass(frozen=True)
class DocumentLine:
    number: int
    type: str  # "usage", "adjustment", "commitment" or "discount"
    description: str
    detail: str  # what kind of charge it is, in a few words
    quantity: str
    unit_price: str  # empty where the breakdown prices the units
    amount: str
    breakdown: Breakdown


@dataclass(frozen=True)
class InvoiceDocument:
    """Every string an invoice document shows, formatted once."""

    id: str
    number: str  # "DRAFT" until issued
    draft: bool
    status: str  # "Issued", "Payment failed", …
    kind: str  # "subscription" or "adjustments"
    currency: str
    issue_date: str | None
    due_date: str | None
    paid_date: str | None
    void_date: str | None
    void_reason: str | None
    period: str | None  # its first and last day
    plan: str | None  # "basic, version 1"
    lines: tuple[DocumentLine, ...]
    subtotal: str
    credit_carried: str | None  # None when nothing is carried
    total: str
    amount_due: str
    replaces: str | None  # the number (else the id) of the invoice this one replaces
    checksum: str | None
    calculation_id: str | None
    events: tuple[tuple[int, str, str | None], ...]  # (line, "300 events", events checksum)


def _usage_line(line: Mapping[str, Any], currency: str) -> DocumentLine:
    model = str(line["model"])
    rows: Sequence[Mapping[str, Any]] = line.get("breakdown") or ()
    # One price for every unit: per_unit, volume (the tier the total is in), a flat fee.
    price_key = UNIT_PRICE_KEYS.get(model)
    unit_price = format_price(rows[0][price_key], currency) if price_key and rows else ""
    detail = MODEL_NAMES.get(model, model.replace("_", " ")).capitalize()
    if line.get("metric_key") is not None:
        detail += f" · metric {line['metric_key']}, meter version {line['meter_version']}"
    else:
        detail += " per billing period"
    return DocumentLine(
        number=int(line["line"]),
        type="usage",
        description=str(line["charge"]),
        detail=detail,
        quantity=format_exact(line["quantity"]) if line.get("quantity") is not None else "",
        unit_price=unit_price,
        amount=format_amount(line["amount"], currency),
        breakdown=breakdown(
            model,
            rows,
            currency,
            unrounded=line.get("unrounded_amount"),
            amount=line["amount"],
        ),
    )


def _events(count: int) -> str:
    return f"{format_exact(count)} event{'' if count == 1 else 's'}"


def _adjustment_line(
    line: Mapping[str, Any], currency: str, numbers: Mapping[str, str]
) -> DocumentLine:
    kind = str(line["kind"])
    detail = ADJUSTMENT_KINDS.get(kind, kind.replace("_", " ").capitalize())
    if original := line.get("original_invoice_id"):
        detail += f" · invoice {numbers.get(original) or original}"
    if line.get("metric_key"):
        detail += f" · {line['metric_key']}"
    quantity = line.get("quantity")
    return DocumentLine(
        number=int(line["line"]),
        type="adjustment",
        description=str(line["description"]),
        detail=detail,
        quantity="" if quantity is None else format_exact(quantity),
        unit_price="",
        amount=format_amount(line["amount"], currency),
        breakdown=Breakdown(),
    )


def _term_line(line: Mapping[str, Any], currency: str) -> DocumentLine:
    """A commitment or discount line."""
    if line["type"] == "discount":
        detail = f"Discount · coupon {line['coupon_code']}"
        if line.get("metric_keys"):
            detail += f" · {', '.join(line['metric_keys'])}"
    else:
        detail = TERM_KINDS.get(str(line["kind"]), str(line["kind"]))
    return DocumentLine(
        number=int(line["line"]),
        type=str(line["type"]),
        description=str(line["description"]),
        detail=detail,
        quantity="",
        unit_price="",
        amount=format_amount(line["amount"], currency),
        breakdown=Breakdown(),
    )


def _line(line: Mapping[str, Any], currency: str, numbers: Mapping[str, str]) -> DocumentLine:
    kind = line.get("type")
    if kind == "adjustment":
        return _adjustment_line(line, currency, numbers)
    if kind in {"commitment", "discount"}:
        return _term_line(line, currency)
    return _usage_line(line, currency)


def referenced_invoices(invoice: Mapping[str, Any]) -> tuple[str, ...]:
    """The other invoices this one names (the one it replaces, those its adjustments
    correct), whose numbers `invoice_document` shows in place of their ids."""
    ids = [invoice.get("replaces")]
    ids += [line.get("original_invoice_id") for line in invoice["lines"]]
    return tuple(dict.fromkeys(str(i) for i in ids if i))


def invoice_document(
    invoice: Mapping[str, Any], numbers: Mapping[str, str] | None = None
) -> InvoiceDocument:
    """The invoice as `views.view` shows it (after canonical JSON), made readable;
    `numbers` maps the ids of `referenced_invoices` to their numbers (an id without one
    is shown as it is)."""
    numbers = numbers or {}
    currency = str(invoice["currency"])
    lines = tuple(_line(line, currency, numbers) for line in invoice["lines"])
    credit = decimal_of(invoice["credit_carried"])
    plan_code, period = invoice.get("plan_code"), invoice.get("period")
    replaces = invoice.get("replaces")
    return InvoiceDocument(
        id=str(invoice["id"]),
        number=invoice["number"] or "DRAFT",
        draft=invoice["number"] is None,
        status=str(invoice["status"]).replace("_", " ").capitalize(),
        kind=invoice.get("kind") or "subscription",
        currency=currency,
        issue_date=format_date(invoice["issued_at"]),
        due_date=format_date(invoice["due_at"]),
        paid_date=format_date(invoice.get("paid_at")),
        void_date=format_date(invoice.get("voided_at")),
        void_reason=invoice.get("void_reason"),
        period=format_period(period["start"], period["end"]) if period else None,
        plan=None if plan_code is None else f"{plan_code}, version {invoice['plan_version']}",
        lines=lines,
        subtotal=format_amount(invoice["subtotal"], currency),
        credit_carried=format_amount(credit, currency) if credit else None,
        total=format_amount(invoice["total"], currency),
        amount_due=format_amount(invoice["amount_due"], currency),
        replaces=None if replaces is None else numbers.get(replaces) or replaces,
        checksum=invoice.get("checksum"),
        calculation_id=invoice.get("calculation_id"),
        events=tuple(
            (int(line["line"]), _events(line.get("event_count") or 0), line.get("events_checksum"))
            for line in invoice["lines"]
            if line.get("type") == "usage" and line.get("metric_key") is not None
        ),
    )
