"""Bounded operational tables: indexes for pruning by age, and dead letters (append-only)
deletable by the retention pruner alone — a transaction that sets
`abaxus.prune = 'dead_letters'`; every other DELETE is still refused.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE INDEX idempotency_records_age ON idempotency_records (created_at);
CREATE INDEX cloudevent_inbox_age ON cloudevent_inbox (received_at);
CREATE INDEX jobs_finished_age ON jobs (finished_at) WHERE status IN ('done', 'dead');
CREATE INDEX dead_letters_age ON dead_letters (received_at);

CREATE FUNCTION abaxus_refuse_unless_pruning() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('abaxus.prune', true) = TG_TABLE_NAME THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'abaxus: % on % is refused: this table keeps history (archive instead)',
    TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'AB001', HINT = 'only the retention pruner deletes here (docs/operations.md)';
END;
$$;
DROP TRIGGER dead_letters_no_delete ON dead_letters;
CREATE TRIGGER dead_letters_no_delete BEFORE DELETE ON dead_letters FOR EACH ROW
  EXECUTE FUNCTION abaxus_refuse_unless_pruning();
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
