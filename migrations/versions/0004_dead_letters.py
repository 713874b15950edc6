"""Dead letters: CloudEvents the broker could not deliver, kept as received (append-only),
so that no usage reported over CloudEvents is ever lost.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE dead_letters (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  received_at  timestamptz NOT NULL DEFAULT now(),
  ce_id        text NOT NULL,
  ce_source    text NOT NULL,
  ce_type      text NOT NULL,
  error_dest   text,
  error_code   text,
  error_data   text,
  headers      jsonb NOT NULL,
  body         bytea NOT NULL,
  UNIQUE (ce_source, ce_id, ce_type)
);
SELECT abaxus_protect('dead_letters', true);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
