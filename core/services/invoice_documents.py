"""What the customer reads: an invoice as HTML and plain text (Jinja2 templates in
core/templates/), and the email that carries both, sent by a job after the issue commits
(retried with backoff; a failed email never blocks or rolls back the issue)."""

from __future__ import annotations

import json
import logging
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import jinja2

from core.adapters import email as smtp
from core.adapters import queue
from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres.database import get_database
from core.adapters.postgres.tables import invoice_emails
from core.config import settings
from core.domain.canonical import canonical_json
from core.services import invoicing
from core.services.invoicing import views as invoice_views

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
EMAIL_JOB = invoicing.EMAIL_JOB

log = logging.getLogger(__name__)

_html = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)
_text = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=False,  # noqa: S701 - the plain-text part of an email; HTML uses _html
    undefined=jinja2.StrictUndefined,
)


def _row_text(row: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {json.dumps(value) if isinstance(value, dict) else value}"
        for key, value in row.items()
        if value is not None
    )


def _context(invoice_id: str) -> dict[str, Any]:
    invoice: dict[str, Any] = json.loads(canonical_json(invoice_views.get_invoice(invoice_id)))
    with get_database().transaction() as connection:
        customer = customer_rows.get(connection, invoice["customer_id"])
    assert customer is not None
    lines = []
    for line in invoice["lines"]:
        if line.get("type") == "adjustment":
            description = line["description"]
            breakdown: list[str] = []
        else:
            metric = (
                f", {line['metric_key']}, meter v{line['meter_version']}"
                if line["metric_key"]
                else ""
            )
            description = f"{line['charge']} ({line['model']}{metric})"
            breakdown = [_row_text(row) for row in line["breakdown"]]
        lines.append(
            {
                "line": line["line"],
                "description": description,
                "quantity": line.get("quantity") or "",
                "amount": line["amount"],
                "breakdown": breakdown,
            }
        )
    config = settings()
    period = invoice["period"]
    return {
        "invoice": invoice,
        "customer": {"name": customer["name"], "email": customer["email"]},
        "seller": {
            "name": config.abaxus_seller_name,
            "address": config.abaxus_seller_address,
            "email": config.abaxus_seller_email,
        },
        "period_label": f"{period['start']} to {period['end']}",
        "lines": lines,
    }


def render(invoice_id: str) -> tuple[str, str]:
    """(HTML, plain text) of an invoice."""
    context = _context(invoice_id)
    return (
        _html.get_template("invoice.html.j2").render(context),
        _text.get_template("invoice.txt.j2").render(context),
    )


def send_email(job: queue.Job) -> None:
    """The email job: render, send (multipart text + HTML), record. A failure raises:
    the queue retries with backoff."""
    config = settings()
    if not config.smtp_url:
        raise queue.RetryLater("SMTP_URL is not configured", queue.backoff(job.attempts + 1))
    invoice_id = str(job.payload["invoice_id"])
    context = _context(invoice_id)
    recipient = context["customer"]["email"]
    if not recipient:
        raise queue.GiveUp(f"customer {context['invoice']['customer_id']} has no email address")
    html, text = render(invoice_id)
    invoice = context["invoice"]
    message = EmailMessage()
    message["From"] = config.abaxus_email_from
    message["To"] = recipient
    message["Subject"] = (
        f"Invoice {invoice['number']} from {config.abaxus_seller_name}: "
        f"{invoice['total']} {invoice['currency']}"
    )
    domain = config.abaxus_email_from.rpartition("@")[2] or "abaxus.invalid"
    message["Message-ID"] = make_msgid(idstring=invoice_id, domain=domain)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    smtp.send(config.smtp_url, message)
    with get_database().transaction() as connection:
        connection.execute(
            invoice_emails.insert().values(
                invoice_id=invoice_id, recipient=recipient, message_id=message["Message-ID"]
            )
        )
    log.info(
        "invoice emailed", extra={"invoice_id": invoice_id, "message_id": message["Message-ID"]}
    )
