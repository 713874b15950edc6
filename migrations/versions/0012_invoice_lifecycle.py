"""Invoices as a state machine whose drafts are live: drafts are re-priced until issued
(their inputs fingerprint says when that is needed), a voided period can be invoiced
again by a replacement (`replaces`), adjustments of a customer with no further
subscription invoice are billed by a standalone adjustments invoice, and voiding a
binding invoice releases, cancels or reverses the adjustments around it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
-- A period holds at most one live (not void) invoice; a voided one can be replaced.
ALTER TABLE invoices DROP CONSTRAINT invoices_subscription_id_period_start_period_end_key;
CREATE UNIQUE INDEX invoices_live_period ON invoices (subscription_id, period_start, period_end)
  WHERE status <> 'void';
CREATE INDEX invoices_subscription_period ON invoices (subscription_id, period_end);

-- A standalone adjustments invoice has no subscription, calculation or plan.
ALTER TABLE invoices
  ADD COLUMN kind text NOT NULL DEFAULT 'subscription'
    CHECK (kind IN ('subscription', 'adjustments')),
  ALTER COLUMN subscription_id DROP NOT NULL,
  ALTER COLUMN calculation_id DROP NOT NULL,
  ALTER COLUMN plan_code DROP NOT NULL,
  ALTER COLUMN plan_version DROP NOT NULL,
  ADD COLUMN replaces text UNIQUE REFERENCES invoices (id),
  ADD COLUMN inputs_fingerprint text,
  ADD COLUMN priced_at timestamptz;
ALTER TABLE invoices ADD CONSTRAINT invoices_kind_shape CHECK (
  (kind = 'subscription') = (subscription_id IS NOT NULL AND calculation_id IS NOT NULL
                             AND plan_code IS NOT NULL AND plan_version IS NOT NULL));
-- One open (draft) adjustments invoice per customer and currency.
CREATE UNIQUE INDEX invoices_open_adjustments ON invoices (customer_id, currency)
  WHERE kind = 'adjustments' AND status = 'draft';

-- Once issued, an invoice's content is fixed: only the status moves, along the table of
-- core/domain/invoices/status.py (draft -> issued | void; issued -> paid | payment_failed
-- | void; payment_failed -> paid | void; staying is not a change).
CREATE OR REPLACE FUNCTION abaxus_invoice_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status = NEW.status AND OLD.status = 'draft' THEN
    RETURN NEW;
  END IF;
  IF OLD.status <> NEW.status AND NOT (
       (OLD.status = 'draft' AND NEW.status IN ('issued', 'void'))
    OR (OLD.status = 'issued' AND NEW.status IN ('paid', 'payment_failed', 'void'))
    OR (OLD.status = 'payment_failed' AND NEW.status IN ('paid', 'void'))
  ) THEN
    RAISE EXCEPTION 'invoice %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
      USING ERRCODE = 'AB001';
  END IF;
  IF OLD.status = 'draft' THEN  -- issuing (or voiding) a draft sets its final content
    RETURN NEW;
  END IF;
  IF (NEW.id, NEW.kind, NEW.customer_id, NEW.subscription_id, NEW.period_start,
      NEW.period_end, NEW.calculation_id, NEW.plan_code, NEW.plan_version, NEW.currency,
      NEW.series, NEW.sequence, NEW.number, NEW.lines, NEW.subtotal, NEW.total,
      NEW.credit_carried, NEW.checksum, NEW.net_terms_days, NEW.due_at, NEW.issued_at,
      NEW.created_at, NEW.replaces, NEW.inputs_fingerprint, NEW.priced_at)
     IS DISTINCT FROM
     (OLD.id, OLD.kind, OLD.customer_id, OLD.subscription_id, OLD.period_start,
      OLD.period_end, OLD.calculation_id, OLD.plan_code, OLD.plan_version, OLD.currency,
      OLD.series, OLD.sequence, OLD.number, OLD.lines, OLD.subtotal, OLD.total,
      OLD.credit_carried, OLD.checksum, OLD.net_terms_days, OLD.due_at, OLD.issued_at,
      OLD.created_at, OLD.replaces, OLD.inputs_fingerprint, OLD.priced_at) THEN
    RAISE EXCEPTION 'invoice % is %: its content never changes', OLD.id, OLD.status
      USING ERRCODE = 'AB001';
  END IF;
  IF OLD.status = 'void' AND (NEW.voided_at, NEW.void_reason, NEW.paid_at,
                              NEW.payment_reference)
       IS DISTINCT FROM (OLD.voided_at, OLD.void_reason, OLD.paid_at, OLD.payment_reference) THEN
    RAISE EXCEPTION 'invoice % is void: it never changes', OLD.id USING ERRCODE = 'AB001';
  END IF;
  RETURN NEW;
END;
$$;

-- Adjustments: reversals (of an adjustment whose invoice was voided), and cancellation
-- of a pending adjustment that no longer stands (its invoice was voided).
ALTER TABLE adjustments DROP CONSTRAINT adjustments_kind_check;
ALTER TABLE adjustments ADD CONSTRAINT adjustments_kind_check
  CHECK (kind IN ('late_usage', 'manual', 'credit_carried', 'void_credit', 'reversal'));
ALTER TABLE adjustments
  ADD COLUMN reverses text UNIQUE REFERENCES adjustments (id),
  ADD COLUMN cancelled_at timestamptz,
  ADD COLUMN cancel_reason text;
ALTER TABLE adjustments ADD CONSTRAINT adjustments_reversal_shape
  CHECK ((kind = 'reversal') = (reverses IS NOT NULL));
ALTER TABLE adjustments ADD CONSTRAINT adjustments_cancel_shape
  CHECK ((cancelled_at IS NULL) = (cancel_reason IS NULL)
         AND (cancelled_at IS NULL OR applied_invoice_id IS NULL));
DROP INDEX adjustments_pending;
CREATE INDEX adjustments_pending ON adjustments (customer_id)
  WHERE applied_invoice_id IS NULL AND cancelled_at IS NULL;
CREATE INDEX adjustments_applied ON adjustments (applied_invoice_id);

-- Drafts no longer hold adjustments (a draft shows what it would carry; issuing takes
-- them): release what existing drafts held, before the new guard is in place.
DROP TRIGGER adjustments_guard ON adjustments;
UPDATE adjustments a SET applied_invoice_id = NULL, applied_at = NULL
  FROM invoices i WHERE a.applied_invoice_id = i.id AND i.status = 'draft';

-- An adjustment's content never changes. It is applied to one invoice at a time: set
-- once when pending, released only when that invoice is void (then carried again by a
-- later one); a void_credit stays with its voided invoice. A pending adjustment may be
-- cancelled, once, and is then never applied.
CREATE OR REPLACE FUNCTION abaxus_adjustment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.customer_id, NEW.subscription_id, NEW.kind, NEW.original_invoice_id,
      NEW.charge, NEW.metric_key, NEW.meter_version, NEW.plan_version, NEW.quantity_delta,
      NEW.amount_delta, NEW.currency, NEW.reason, NEW.description, NEW.created_at,
      NEW.reverses)
     IS DISTINCT FROM
     (OLD.id, OLD.customer_id, OLD.subscription_id, OLD.kind, OLD.original_invoice_id,
      OLD.charge, OLD.metric_key, OLD.meter_version, OLD.plan_version, OLD.quantity_delta,
      OLD.amount_delta, OLD.currency, OLD.reason, OLD.description, OLD.created_at,
      OLD.reverses) THEN
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
CREATE TRIGGER adjustments_guard BEFORE UPDATE ON adjustments
  FOR EACH ROW EXECUTE FUNCTION abaxus_adjustment_guard();
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
