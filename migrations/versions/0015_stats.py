"""The console: the key that signs its sessions; and what its overview reads without
scanning raw events: accepted events per
minute of receipt (written by the fold from its jobs' counts), and the ingest function's
request latencies per minute as histogram buckets (written by every ingest process), so a
p95 combines every pod.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE ingest_minutes (
  minute  timestamptz PRIMARY KEY,
  events  bigint NOT NULL CHECK (events >= 0)
);
-- Events already folded before this revision (events of pending jobs are counted when
-- their jobs are folded).
INSERT INTO ingest_minutes (minute, events)
  SELECT date_trunc('minute', received_at), count(*) FROM events
  WHERE ingest_job_id NOT IN (SELECT id FROM jobs WHERE queue = 'aggregate' AND status = 'pending')
  GROUP BY 1;

-- The key that signs console session cookies: made once per database, so every pod of
-- the api function verifies every other's sessions (PostgreSQL stays the only state).
CREATE TABLE console_secrets (
  id          integer PRIMARY KEY CHECK (id = 1),
  secret      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
SELECT abaxus_protect('console_secrets', true);

-- Each re-send of a dead letter (POST /v1/dead-letters/{id}/redeliver, or the console).
CREATE TABLE dead_letter_redeliveries (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  dead_letter_id  bigint NOT NULL,
  actor           text NOT NULL,
  redelivered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_redeliveries_letter ON dead_letter_redeliveries (dead_letter_id);

CREATE TABLE ingest_latency (
  minute     timestamptz NOT NULL,
  bucket_ms  integer NOT NULL CHECK (bucket_ms > 0),
  requests   bigint NOT NULL CHECK (requests >= 0),
  PRIMARY KEY (minute, bucket_ms)
);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
