"""Events: raw usage, partitioned by event time (monthly), with idempotency keys that are
unique forever in a table of their own (a unique index on a partitioned table would have
to include the partition key).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE event_keys (
  idempotency_key text PRIMARY KEY,
  content_sha256  text NOT NULL,
  event_id        text NOT NULL,
  event_timestamp timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);
SELECT abaxus_protect('event_keys', true);

CREATE TABLE events (
  id              text NOT NULL,
  customer_id     text NOT NULL,
  metric_key      text NOT NULL,
  value           numeric(20, 10) NOT NULL,
  timestamp       timestamptz NOT NULL,
  properties      jsonb NOT NULL DEFAULT '{}'::jsonb,
  idempotency_key text NOT NULL,
  content_sha256  text NOT NULL,
  received_at     timestamptz NOT NULL DEFAULT now(),
  region          text NOT NULL,
  ingest_job_id   bigint NOT NULL
) PARTITION BY RANGE (timestamp);
-- The exact scan (usage, pricing) and the aggregator's hand-off.
CREATE INDEX events_scan ON events (customer_id, metric_key, timestamp);
CREATE INDEX events_ingest_job ON events (ingest_job_id);
SELECT abaxus_protect('events', true);

-- One partition per UTC month, created on demand and ahead of time. Serialized by an
-- advisory lock so that concurrent ingestion never races on CREATE TABLE.
CREATE FUNCTION abaxus_ensure_event_partition(month_start date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  first date := date_trunc('month', month_start)::date;
  name text := 'events_' || to_char(first, 'YYYY_MM');
BEGIN
  IF to_regclass(name) IS NOT NULL THEN
    RETURN name;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('abaxus_event_partitions'));
  EXECUTE format(
    'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
    name,
    to_char(first, 'YYYY-MM-DD') || ' 00:00:00+00',
    to_char((first + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
  );
  RETURN name;
END;
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
