"""Data contracts and ownership (API.md §18): a metric version may carry a contract (who
owns it, who may produce its events, what their value and properties must be); API keys
may belong to a team and hold `corrections:write`; events that break a quarantining
contract are kept, durably and uncounted, until they are released; events a meter's
filters exclude are counted per hour so that a summary can say how many there were.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
ALTER TABLE metric_versions ADD COLUMN contract jsonb;

ALTER TABLE api_keys ADD COLUMN team text
  CHECK (team ~ '^[a-z0-9][a-z0-9_.\-]{0,63}$');
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
  CHECK (cardinality(scopes) >= 1
         AND scopes <@ ARRAY['events:write', 'read', 'admin', 'corrections:write']::text[]);

-- An event that broke a quarantining contract: stored as it came (its idempotency key is
-- consumed: event_keys names its id), never counted while it is here. A release moves it
-- into `events` under the same id (released_at set, the row kept as the record of it);
-- violations are those of the last check.
CREATE TABLE quarantined_events (
  id              text PRIMARY KEY,
  customer_id     text NOT NULL,
  metric_key      text NOT NULL REFERENCES metrics (key),
  value           numeric(20, 10) NOT NULL,
  timestamp       timestamptz NOT NULL,
  properties      jsonb NOT NULL,
  idempotency_key text NOT NULL UNIQUE,
  content_sha256  text NOT NULL,
  digest          numeric(78, 0) NOT NULL,
  region          text NOT NULL,
  producer        text,
  metric_version  integer NOT NULL,
  violations      jsonb NOT NULL,
  received_at     timestamptz NOT NULL DEFAULT now(),
  checked_at      timestamptz NOT NULL DEFAULT now(),
  released_at     timestamptz,
  released_by     text,
  CHECK ((released_at IS NULL) = (released_by IS NULL))
);
CREATE INDEX quarantined_events_held ON quarantined_events (metric_key, customer_id, timestamp, id)
  WHERE released_at IS NULL;
SELECT abaxus_protect('quarantined_events', false);

-- Events of a meter version with filters that the filters exclude, per hour: stored, not
-- counted, and no longer silent (GET /v1/usage/summary: excluded_events).
CREATE TABLE usage_rollup_excluded (
  customer_id  text NOT NULL,
  metric_key   text NOT NULL,
  bucket_start timestamptz NOT NULL,
  version      integer NOT NULL,
  event_count  bigint NOT NULL CHECK (event_count >= 0),
  PRIMARY KEY (customer_id, metric_key, bucket_start, version)
);
-- Events stored before this revision that filters exclude: counted by a refold of each
-- metric with filters (the aggregator's own job, from the metric's first version on).
INSERT INTO jobs (queue, kind, payload, max_attempts)
  SELECT 'aggregate', 'refold',
         jsonb_build_object('metric_key', metric_key,
                            'since', to_char(min(effective_from) AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS"+00:00"')),
         8
  FROM metric_versions GROUP BY metric_key
  HAVING bool_or(filters <> '{}'::jsonb);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
