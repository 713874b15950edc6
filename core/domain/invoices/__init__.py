"""The invoice domain: its states and the one table of their transitions (`status`), the
assembly of an invoice from a calculation and the adjustments it carries (`assembly`),
the late-usage difference (`late_usage`), what voiding does to adjustments (`voiding`),
numbering (`numbering`) and the request bodies of the invoicing API (`requests`).

Pure: no I/O, no clock, no database. The services ask these modules every question about
an invoice's state and content; no status set is written out anywhere else.
"""

from core.domain.invoices.requests import (
    BulkRun,
    MarkPaid,
    NewAdjustment,
    NewInvoice,
    VoidInvoice,
)
from core.domain.invoices.status import InvoiceStatus

__all__ = [
    "BulkRun",
    "InvoiceStatus",
    "MarkPaid",
    "NewAdjustment",
    "NewInvoice",
    "VoidInvoice",
]
