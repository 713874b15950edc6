"""Invoices with gap-free numbering and database-enforced immutability once issued, and
adjustments (late usage, manual corrections, credit carried forward).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
-- One counter per series ("ABX-2026"): taken with the row lock in the issuing
-- transaction, so a rolled-back issue gives its number back and numbers have no gaps.
CREATE TABLE invoice_series (
  series      text PRIMARY KEY,
  last_number bigint NOT NULL CHECK (last_number >= 0)
);

CREATE TABLE invoices (
  id              text PRIMARY KEY,
  customer_id     text NOT NULL REFERENCES customers (id),
  subscription_id text NOT NULL REFERENCES subscriptions (id),
  period_start    timestamptz NOT NULL,
  period_end      timestamptz NOT NULL,
  calculation_id  text NOT NULL REFERENCES calculations (id),
  plan_code       text NOT NULL,
  plan_version    integer NOT NULL,
  currency        text NOT NULL,
  status          text NOT NULL DEFAULT 'draft'
                  CHECK (status IN ('draft', 'issued', 'paid', 'payment_failed', 'void')),
  series          text,
  sequence        bigint,
  number          text UNIQUE,
  lines           jsonb NOT NULL,
  subtotal        numeric(20, 10) NOT NULL,
  total           numeric(20, 10) NOT NULL CHECK (total >= 0),
  credit_carried  numeric(20, 10) NOT NULL DEFAULT 0 CHECK (credit_carried >= 0),
  checksum        text NOT NULL,
  net_terms_days  integer NOT NULL,
  due_at          timestamptz,
  issued_at       timestamptz,
  paid_at         timestamptz,
  voided_at       timestamptz,
  void_reason     text,
  payment_reference text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (subscription_id, period_start, period_end),
  UNIQUE (series, sequence),
  CHECK ((status = 'draft') = (number IS NULL) OR status = 'void')
);
CREATE INDEX invoices_customer ON invoices (customer_id, created_at);
CREATE INDEX invoices_status ON invoices (status);
SELECT abaxus_protect('invoices', false);

-- Once issued, an invoice's content is fixed: only the status moves (issued -> paid |
-- payment_failed | void; payment_failed -> paid | void | payment_failed), with the
-- timestamps and references that go with it.
CREATE FUNCTION abaxus_invoice_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status = 'draft' THEN
    RETURN NEW;
  END IF;
  IF (NEW.id, NEW.customer_id, NEW.subscription_id, NEW.period_start, NEW.period_end,
      NEW.calculation_id, NEW.plan_code, NEW.plan_version, NEW.currency, NEW.series,
      NEW.sequence, NEW.number, NEW.lines, NEW.subtotal, NEW.total, NEW.credit_carried,
      NEW.checksum, NEW.net_terms_days, NEW.due_at, NEW.issued_at, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.customer_id, OLD.subscription_id, OLD.period_start, OLD.period_end,
      OLD.calculation_id, OLD.plan_code, OLD.plan_version, OLD.currency, OLD.series,
      OLD.sequence, OLD.number, OLD.lines, OLD.subtotal, OLD.total, OLD.credit_carried,
      OLD.checksum, OLD.net_terms_days, OLD.due_at, OLD.issued_at, OLD.created_at) THEN
    RAISE EXCEPTION 'invoice % is %: its content never changes', OLD.id, OLD.status
      USING ERRCODE = 'AB001';
  END IF;
  IF NOT (
       (OLD.status = 'issued' AND NEW.status IN ('issued', 'paid', 'payment_failed', 'void'))
    OR (OLD.status = 'payment_failed' AND NEW.status IN ('payment_failed', 'paid', 'void'))
    OR (OLD.status = NEW.status)
  ) THEN
    RAISE EXCEPTION 'invoice %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'AB001';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER invoices_guard BEFORE UPDATE ON invoices
  FOR EACH ROW EXECUTE FUNCTION abaxus_invoice_guard();

-- Adjustments: late usage found by the aggregator, manual corrections, credits carried
-- forward and credits for voided invoices. Pending until an invoice carries them; then
-- applied to exactly that invoice.
CREATE TABLE adjustments (
  id                  text PRIMARY KEY,
  customer_id         text NOT NULL REFERENCES customers (id),
  subscription_id     text REFERENCES subscriptions (id),
  kind                text NOT NULL
                      CHECK (kind IN ('late_usage', 'manual', 'credit_carried', 'void_credit')),
  original_invoice_id text REFERENCES invoices (id),
  charge              text,
  metric_key          text,
  meter_version       integer,
  plan_version        integer,
  quantity_delta      numeric(20, 10),
  amount_delta        numeric(20, 10) NOT NULL,
  currency            text NOT NULL,
  reason              text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  description         text NOT NULL,
  applied_invoice_id  text REFERENCES invoices (id),
  applied_at          timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adjustments_pending ON adjustments (customer_id) WHERE applied_invoice_id IS NULL;
CREATE INDEX adjustments_original ON adjustments (original_invoice_id, charge);
SELECT abaxus_protect('adjustments', false);

-- An adjustment's content never changes; it is applied to one invoice (and released
-- only when that invoice was a draft that got voided).
CREATE FUNCTION abaxus_adjustment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.customer_id, NEW.subscription_id, NEW.kind, NEW.original_invoice_id,
      NEW.charge, NEW.metric_key, NEW.meter_version, NEW.plan_version, NEW.quantity_delta,
      NEW.amount_delta, NEW.currency, NEW.reason, NEW.description, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.customer_id, OLD.subscription_id, OLD.kind, OLD.original_invoice_id,
      OLD.charge, OLD.metric_key, OLD.meter_version, OLD.plan_version, OLD.quantity_delta,
      OLD.amount_delta, OLD.currency, OLD.reason, OLD.description, OLD.created_at) THEN
    RAISE EXCEPTION 'adjustment % never changes', OLD.id USING ERRCODE = 'AB001';
  END IF;
  IF OLD.applied_invoice_id IS NOT NULL AND NEW.applied_invoice_id IS NOT NULL
     AND NEW.applied_invoice_id <> OLD.applied_invoice_id THEN
    RAISE EXCEPTION 'adjustment % is applied to %', OLD.id, OLD.applied_invoice_id
      USING ERRCODE = 'AB001';
  END IF;
  IF OLD.applied_invoice_id IS NOT NULL AND NEW.applied_invoice_id IS NULL AND NOT EXISTS (
       SELECT 1 FROM invoices WHERE id = OLD.applied_invoice_id AND status = 'void'
                                AND number IS NULL) THEN
    RAISE EXCEPTION 'adjustment % stays applied to issued invoice %', OLD.id,
      OLD.applied_invoice_id USING ERRCODE = 'AB001';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER adjustments_guard BEFORE UPDATE ON adjustments
  FOR EACH ROW EXECUTE FUNCTION abaxus_adjustment_guard();
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
