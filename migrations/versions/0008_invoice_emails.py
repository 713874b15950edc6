"""Invoice emails: one row per delivery the SMTP server accepted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE invoice_emails (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  invoice_id  text NOT NULL REFERENCES invoices (id),
  recipient   text NOT NULL,
  message_id  text NOT NULL,
  sent_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoice_emails_invoice ON invoice_emails (invoice_id);
SELECT abaxus_protect('invoice_emails', true);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
