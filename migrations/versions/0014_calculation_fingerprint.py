"""A calculation records the inputs fingerprint taken just before it was priced
(core/domain/invoices/freshness.py), so that a draft can take the calculation the
`calculate` function made without pricing the period again when nothing changed since.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
ALTER TABLE calculations ADD COLUMN inputs_fingerprint text;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
