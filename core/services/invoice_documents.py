"""What the customer reads: an invoice as HTML, plain text and PDF (the PDF is the HTML
laid out by WeasyPrint, so the two cannot disagree), and the email that carries all
three, sent by a job after the issue commits (retried with backoff; a failed email never
blocks or rolls back the issue). What each figure says is core/domain/invoice_document.py;
the layout is core/templates/invoice.html.j2 and invoice.txt.j2."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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
from core.domain.documents import text_table
from core.domain.errors import Conflict, NotFound
from core.domain.invoice_document import InvoiceDocument, invoice_document, referenced_invoices
from core.services import invoicing
from core.services.invoicing import views as invoice_views

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
EMAIL_JOB = invoicing.EMAIL_JOB
PDF_CONTENT_TYPE = "application/pdf"
# Other invoices a document names by number (the one it replaces, those its adjustments
# correct); past this many, the rest are named by id.
REFERENCED_INVOICES_MAX = 20

log = logging.getLogger(__name__)

_html = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)
_text = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=False,  # noqa: S701 - the plain-text part of an email; HTML uses _html
    undefined=jinja2.StrictUndefined,
)
_text.globals["text_table"] = text_table


def _numbers(invoice_ids: tuple[str, ...]) -> dict[str, str]:
    """The numbers of the invoices a document names (a draft, or one gone, has none)."""
    numbers = {}
    for invoice_id in invoice_ids[:REFERENCED_INVOICES_MAX]:
        try:
            number = invoice_views.get_invoice(invoice_id)["number"]
        except NotFound:
            continue
        if number is not None:
            numbers[invoice_id] = str(number)
    return numbers


def _context(invoice_id: str) -> dict[str, Any]:
    invoice: dict[str, Any] = json.loads(canonical_json(invoice_views.get_invoice(invoice_id)))
    with get_database().transaction() as connection:
        customer = customer_rows.get(connection, invoice["customer_id"])
    assert customer is not None  # invoices reference customers
    config = settings()
    return {
        "document": invoice_document(invoice, _numbers(referenced_invoices(invoice))),
        "customer": {"id": customer["id"], "name": customer["name"], "email": customer["email"]},
        "seller": {
            "name": config.abaxus_seller_name,
            "address": config.abaxus_seller_address,
            "email": config.abaxus_seller_email,
        },
    }


def _render(context: dict[str, Any]) -> tuple[str, str]:
    return (
        _html.get_template("invoice.html.j2").render(context),
        _text.get_template("invoice.txt.j2").render(context),
    )


def render(invoice_id: str) -> tuple[str, str]:
    """(HTML, plain text) of an invoice, a draft included."""
    return _render(_context(invoice_id))


def _pdf(html: str) -> bytes:
    """The HTML laid out on A4 by WeasyPrint. The document needs nothing from outside (its
    styles are inline, its fonts the system's): a fetcher that allows no protocol makes
    sure nothing is ever fetched, whatever a template or a customer's name contains."""
    # Imported here: WeasyPrint loads Pango, which only the invoice function needs (every
    # function imports this module through functions/main.py).
    from weasyprint import HTML  # noqa: PLC0415
    from weasyprint.urls import URLFetcher  # noqa: PLC0415

    fetcher = URLFetcher(allowed_protocols=(), allow_redirects=False)
    content = HTML(string=html, url_fetcher=fetcher).write_pdf()
    assert isinstance(content, bytes)
    assert content.startswith(b"%PDF-")
    return content


@dataclass(frozen=True)
class Pdf:
    filename: str  # "<number>.pdf"
    content: bytes


def pdf(invoice_id: str) -> Pdf:
    """The PDF of an issued invoice (paid, failed and void ones keep theirs; a void one
    says so). A draft has none: 409 invoice_not_issued."""
    context = _context(invoice_id)
    document: InvoiceDocument = context["document"]
    if document.draft:
        raise Conflict(
            f"invoice {invoice_id} is a draft: only an issued invoice has a PDF",
            code="invoice_not_issued",
        )
    html, _ = _render(context)
    return Pdf(pdf_filename(document), _pdf(html))


def render_pdf(invoice_id: str) -> bytes:
    return pdf(invoice_id).content


def pdf_filename(document: InvoiceDocument) -> str:
    return f"{document.number}.pdf"


def send_email(job: queue.Job) -> None:
    """The email job: render, send (multipart text + HTML, the PDF attached), record. A
    failure raises: the queue retries with backoff."""
    config = settings()
    if not config.smtp_url:
        raise queue.RetryLater("SMTP_URL is not configured", queue.backoff(job.attempts + 1))
    invoice_id = str(job.payload["invoice_id"])
    context = _context(invoice_id)
    document: InvoiceDocument = context["document"]
    recipient = context["customer"]["email"]
    if not recipient:
        raise queue.GiveUp(f"customer {context['customer']['id']} has no email address")
    if document.draft:  # the job is queued by the issue: a draft here is a bug, not a retry
        raise queue.GiveUp(f"invoice {invoice_id} is a draft: only issued invoices are sent")
    html, text = _render(context)
    message = EmailMessage()
    message["From"] = config.abaxus_email_from
    message["To"] = recipient
    message["Subject"] = (
        f"Invoice {document.number} from {config.abaxus_seller_name}: "
        f"{document.total} {document.currency}"
    )
    domain = config.abaxus_email_from.rpartition("@")[2] or "abaxus.invalid"
    message["Message-ID"] = make_msgid(idstring=invoice_id, domain=domain)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    message.add_attachment(
        _pdf(html), maintype="application", subtype="pdf", filename=pdf_filename(document)
    )
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
