"""A BRIN index on events.received_at: a scan of a window a `replace` correction superseded
reads the events received after the apply (its replacements, later events) by block range
instead of every superseded row (API.md §19; docs/benchmarks.md, "Corrections"). BRIN
keeps one summary per range of pages, and events are appended in the order they are
received, so it costs ingestion next to nothing.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX events_received ON events USING brin (received_at) "
        "WITH (pages_per_range = 32)"
    )


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
