"""Real-time usage: per-event digests for order-independent checksums, hourly rollups
(with exact distinct sets and percentile sketches), and an index for the fold watermark.

Rollups are derived data: rebuilt from events whenever a metric version changes what
counts (the refold job), so they are not protected like events are.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
-- SHA-256 of `idempotency_key TAB timestamp TAB value LF` as an unsigned 256-bit integer
-- (core.domain.meters.event_digest), written by ingestion; events stored before this
-- revision get it here, computed the same way in SQL.
ALTER TABLE events ADD COLUMN digest numeric(78, 0);

CREATE FUNCTION pg_temp.abaxus_hex_to_numeric(hex text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
  SELECT sum(
    ('x' || lpad(substr(hex, 8 * k + 1, 8), 8, '0'))::bit(32)::bigint::numeric
    * power(2::numeric, 32 * (7 - k))
  )
  FROM generate_series(0, 7) AS k
$$;

ALTER TABLE events DISABLE TRIGGER events_no_update;
UPDATE events SET digest = pg_temp.abaxus_hex_to_numeric(encode(sha256(convert_to(
  idempotency_key || E'\t'
  || to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
  || CASE WHEN mod(extract(microseconds FROM timestamp)::bigint, 1000000) = 0 THEN ''
          ELSE '.' || to_char(timestamp AT TIME ZONE 'UTC', 'US') END || 'Z'
  || E'\t' || trim_scale(value)::text || E'\n', 'UTF8')), 'hex'))
WHERE digest IS NULL;
ALTER TABLE events ENABLE TRIGGER events_no_update;
ALTER TABLE events ALTER COLUMN digest SET NOT NULL;

-- One row per customer, metric, meter version, group and UTC hour: what every
-- aggregation needs to merge buckets (sum of at most 2^63 values of |v| < 10^10 fits
-- numeric(38, 10) exactly).
CREATE TABLE usage_rollups (
  customer_id    text NOT NULL,
  metric_key     text NOT NULL,
  bucket_start   timestamptz NOT NULL,
  version        integer NOT NULL,
  group_values   text[] NOT NULL,
  event_count    bigint NOT NULL,
  total          numeric(38, 10) NOT NULL,
  smallest       numeric(20, 10) NOT NULL,
  largest        numeric(20, 10) NOT NULL,
  -- the latest event (timestamp, then greatest key in byte order), for `last` meters only
  last_timestamp timestamptz,
  last_key       text,
  last_value     numeric(20, 10),
  digest_sum     numeric NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, metric_key, bucket_start, version, group_values)
);

-- unique_count: the exact set of distinct values per bucket.
CREATE TABLE usage_rollup_distinct (
  customer_id  text NOT NULL,
  metric_key   text NOT NULL,
  bucket_start timestamptz NOT NULL,
  version      integer NOT NULL,
  group_values text[] NOT NULL,
  value_text   text NOT NULL,
  PRIMARY KEY (customer_id, metric_key, bucket_start, version, group_values, value_text)
);

-- percentile: logarithmic bins (core.domain.meters, SKETCH_*) with counts per bucket.
CREATE TABLE usage_rollup_sketch (
  customer_id  text NOT NULL,
  metric_key   text NOT NULL,
  bucket_start timestamptz NOT NULL,
  version      integer NOT NULL,
  group_values text[] NOT NULL,
  sign         smallint NOT NULL,
  bin          integer NOT NULL,
  event_count  bigint NOT NULL,
  PRIMARY KEY (customer_id, metric_key, bucket_start, version, group_values, sign, bin)
);

-- The fold watermark and parity read unfinished jobs; done jobs accumulate.
CREATE INDEX jobs_unfinished ON jobs (queue, kind, created_at) WHERE status <> 'done';
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
