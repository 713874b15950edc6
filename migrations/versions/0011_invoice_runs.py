"""Bulk invoice runs: which subscriptions a run asked for, to report its progress.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE invoice_runs (
  id          text PRIMARY KEY,
  period_end  timestamptz NOT NULL,
  issue       boolean NOT NULL,
  charge      boolean NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
SELECT abaxus_protect('invoice_runs', true);

CREATE TABLE invoice_run_items (
  run_id          text NOT NULL REFERENCES invoice_runs (id),
  subscription_id text NOT NULL REFERENCES subscriptions (id),
  period_start    timestamptz NOT NULL,
  period_end      timestamptz NOT NULL,
  PRIMARY KEY (run_id, subscription_id)
);
SELECT abaxus_protect('invoice_run_items', true);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
