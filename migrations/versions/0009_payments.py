"""Payments: one row per charge attempt of an invoice, recorded with its idempotency key
before the provider is called, so a retry after a crash reuses the key.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE payments (
  id              text PRIMARY KEY,
  invoice_id      text NOT NULL REFERENCES invoices (id),
  attempt         integer NOT NULL CHECK (attempt >= 1),
  provider        text NOT NULL,
  idempotency_key text NOT NULL UNIQUE,
  provider_id     text,
  amount          numeric(20, 10) NOT NULL,
  currency        text NOT NULL,
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'succeeded', 'failed', 'awaiting')),
  error           text,
  reference       text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (invoice_id, attempt)
);
SELECT abaxus_protect('payments', false);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
