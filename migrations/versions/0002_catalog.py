"""Catalog: metrics and their versions, price plans and their versions, customers,
subscriptions, and the closed (invoiced) periods that versions must not reach back into.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE metrics (
  key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,63}$'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  archived_at timestamptz
);
SELECT abaxus_protect('metrics', false);

-- A version is in force on [effective_from, the next version's effective_from): its end is
-- derived, never stored, so no version row is ever updated.
CREATE TABLE metric_versions (
  metric_key      text NOT NULL REFERENCES metrics (key),
  version         integer NOT NULL CHECK (version >= 1),
  name            text NOT NULL,
  unit            text NOT NULL,
  aggregation     text NOT NULL
                  CHECK (aggregation IN ('sum', 'count', 'max', 'min', 'last',
                                         'unique_count', 'percentile')),
  unique_property text,
  percentile      numeric(20, 10) CHECK (percentile > 0 AND percentile <= 100),
  filters         jsonb NOT NULL DEFAULT '{}'::jsonb,
  group_by        text[] NOT NULL DEFAULT '{}',
  effective_from  timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (metric_key, version),
  UNIQUE (metric_key, effective_from)
);
SELECT abaxus_protect('metric_versions', true);

CREATE TABLE price_plans (
  code        text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9_\-]{0,63}$'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  archived_at timestamptz
);
SELECT abaxus_protect('price_plans', false);

CREATE TABLE plan_versions (
  plan_code         text NOT NULL REFERENCES price_plans (code),
  version           integer NOT NULL CHECK (version >= 1),
  name              text NOT NULL,
  currency          text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  interval          text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'quarter', 'year')),
  charges           jsonb NOT NULL,
  definition_sha256 text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (plan_code, version)
);
SELECT abaxus_protect('plan_versions', true);

CREATE TABLE customers (
  id                   text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.:\-]{1,128}$'),
  name                 text NOT NULL,
  email                text,
  currency             text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  region               text,
  billing_provider     text NOT NULL CHECK (billing_provider IN ('stripe', 'manual')),
  provider_customer_id text,
  payment_method       text,
  metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  archived_at          timestamptz
);
SELECT abaxus_protect('customers', false);

CREATE TABLE subscriptions (
  id           text PRIMARY KEY,
  customer_id  text NOT NULL REFERENCES customers (id),
  plan_code    text NOT NULL,
  plan_version integer NOT NULL,
  starts_at    timestamptz NOT NULL,
  ends_at      timestamptz CHECK (ends_at IS NULL OR ends_at > starts_at),
  overrides    jsonb NOT NULL DEFAULT '[]'::jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  canceled_at  timestamptz,
  FOREIGN KEY (plan_code, plan_version) REFERENCES plan_versions (plan_code, version)
);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id, id);
SELECT abaxus_protect('subscriptions', false);

-- Periods whose invoice is issued (the invoicing issue inserts a row when it issues).
CREATE TABLE closed_periods (
  subscription_id text NOT NULL REFERENCES subscriptions (id),
  period_start    timestamptz NOT NULL,
  period_end      timestamptz NOT NULL CHECK (period_end > period_start),
  invoice_id      text NOT NULL,
  closed_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subscription_id, period_start)
);
SELECT abaxus_protect('closed_periods', true);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
