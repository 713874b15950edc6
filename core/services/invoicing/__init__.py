"""Invoicing, one module per use case: `lifecycle` (draft, refresh, issue, void),
`adjustments` (manual adjustments and late usage), `cycles` (the billing tick, bulk runs,
standalone adjustments invoices) and `views` (what the API shows). The rules they apply
live in core/domain/invoices/; these modules hold the transactions around them."""

import secrets

INVOICE_QUEUE = "invoice"
EMAIL_JOB = "email"  # payload {"invoice_id"}: core.services.invoice_documents.send_email
LATE_USAGE_JOB = "late_usage"  # payload {"invoice_id", "metric_key"}: adjustments.late_usage_job


def email_job_key(invoice_id: str) -> str:
    return f"email-{invoice_id}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"
