"""Corrections (API.md §19): wrong usage is corrected without editing a raw event or an
issued invoice. A correction supersedes events — a `replace` by its range (metric,
customer, window, received before the apply), an `amend` by the keys it retracts — as data
of its own, so superseding a million events writes one row; the events posted into it are
staged until the apply moves them into `events` (marked with the correction, so a revert
stops them counting). Issued periods get adjustments of kind `correction`, with the
checksums of the events added and superseded.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE TABLE corrections (
  id            text PRIMARY KEY,
  metric_key    text NOT NULL REFERENCES metrics (key),
  customer_id   text REFERENCES customers (id),
  window_start  timestamptz NOT NULL,
  window_end    timestamptz NOT NULL CHECK (window_end > window_start),
  mode          text NOT NULL CHECK (mode IN ('replace', 'amend')),
  reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'applied', 'reverted')),
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  applied_at    timestamptz,
  applied_by    text,
  reverted_at   timestamptz,
  reverted_by   text,
  CHECK ((status = 'open') = (applied_at IS NULL)),
  CHECK ((status = 'reverted') = (reverted_at IS NOT NULL))
);
CREATE INDEX corrections_metric ON corrections (metric_key, status);
SELECT abaxus_protect('corrections', false);

-- Events posted into a correction: their keys are claimed in event_keys like any event's,
-- and they count for nothing until the correction is applied (then moved into `events`).
CREATE TABLE correction_events (
  id              text PRIMARY KEY,
  correction_id   text NOT NULL REFERENCES corrections (id),
  customer_id     text NOT NULL,
  metric_key      text NOT NULL,
  value           numeric(20, 10) NOT NULL,
  timestamp       timestamptz NOT NULL,
  properties      jsonb NOT NULL,
  idempotency_key text NOT NULL UNIQUE,
  content_sha256  text NOT NULL,
  digest          numeric(78, 0) NOT NULL,
  received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX correction_events_of ON correction_events (correction_id, timestamp);
SELECT abaxus_protect('correction_events', true);

-- The events an `amend` retracts, by key (each names a stored event).
CREATE TABLE correction_retractions (
  correction_id   text NOT NULL REFERENCES corrections (id),
  idempotency_key text NOT NULL,
  event_id        text NOT NULL,
  PRIMARY KEY (correction_id, idempotency_key)
);
SELECT abaxus_protect('correction_retractions', true);

ALTER TABLE events ADD COLUMN correction_id text;

ALTER TABLE adjustments DROP CONSTRAINT adjustments_kind_check;
ALTER TABLE adjustments ADD CONSTRAINT adjustments_kind_check
  CHECK (kind IN ('late_usage', 'manual', 'credit_carried', 'void_credit', 'reversal',
                  'correction'));
ALTER TABLE adjustments ADD COLUMN correction_id text REFERENCES corrections (id);
ALTER TABLE adjustments ADD COLUMN added_sha256 text;
ALTER TABLE adjustments ADD COLUMN superseded_sha256 text;
-- ... and they never change either.
CREATE OR REPLACE FUNCTION abaxus_adjustment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.customer_id, NEW.subscription_id, NEW.kind, NEW.original_invoice_id,
      NEW.charge, NEW.metric_key, NEW.meter_version, NEW.plan_version, NEW.quantity_delta,
      NEW.amount_delta, NEW.currency, NEW.reason, NEW.description, NEW.created_at,
      NEW.reverses, NEW.correction_id, NEW.added_sha256, NEW.superseded_sha256)
     IS DISTINCT FROM
     (OLD.id, OLD.customer_id, OLD.subscription_id, OLD.kind, OLD.original_invoice_id,
      OLD.charge, OLD.metric_key, OLD.meter_version, OLD.plan_version, OLD.quantity_delta,
      OLD.amount_delta, OLD.currency, OLD.reason, OLD.description, OLD.created_at,
      OLD.reverses, OLD.correction_id, OLD.added_sha256, OLD.superseded_sha256) THEN
    RAISE EXCEPTION 'adjustment % never changes', OLD.id USING ERRCODE = 'AB001';
  END IF;
  IF OLD.cancelled_at IS NOT NULL AND (NEW.cancelled_at, NEW.cancel_reason,
                                       NEW.applied_invoice_id)
       IS DISTINCT FROM (OLD.cancelled_at, OLD.cancel_reason, OLD.applied_invoice_id) THEN
    RAISE EXCEPTION 'adjustment % is cancelled', OLD.id USING ERRCODE = 'AB001';
  END IF;
  IF OLD.applied_invoice_id IS NOT NULL AND NEW.applied_invoice_id IS NOT NULL
     AND NEW.applied_invoice_id <> OLD.applied_invoice_id THEN
    RAISE EXCEPTION 'adjustment % is applied to %', OLD.id, OLD.applied_invoice_id
      USING ERRCODE = 'AB001';
  END IF;
  IF OLD.applied_invoice_id IS NOT NULL AND NEW.applied_invoice_id IS NULL AND (
       OLD.kind = 'void_credit'
       OR NOT EXISTS (SELECT 1 FROM invoices WHERE id = OLD.applied_invoice_id
                                               AND status = 'void')) THEN
    RAISE EXCEPTION 'adjustment % stays applied to invoice %', OLD.id,
      OLD.applied_invoice_id USING ERRCODE = 'AB001';
  END IF;
  RETURN NEW;
END;
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
