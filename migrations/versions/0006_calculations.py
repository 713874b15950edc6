"""Calculations: immutable priced results, identified by the checksum of their inputs
(subscription, plan version, overrides, period, the checksums of the events behind each
line), so the same inputs always give the same row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE calculations (
  id              text PRIMARY KEY,
  subscription_id text NOT NULL REFERENCES subscriptions (id),
  customer_id     text NOT NULL,
  period_start    timestamptz NOT NULL,
  period_end      timestamptz NOT NULL,
  inputs_sha256   text NOT NULL,
  checksum        text NOT NULL,
  body            jsonb NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  CHECK (period_end > period_start)
);
CREATE INDEX calculations_subscription ON calculations (subscription_id, period_start);
SELECT abaxus_protect('calculations', true);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
