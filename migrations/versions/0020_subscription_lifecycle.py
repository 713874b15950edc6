"""Subscription lifecycle and commercial terms (API.md §11, §12).

- `subscription_metrics`: one row per metric a subscription charges, over the time it is
  in force (`[starts_at, ends_at)`), kept by a trigger on `subscriptions`; an exclusion
  constraint refuses two rows of one customer and one metric whose times overlap, so no
  two subscriptions bill one metric twice — decided by the database, also when two
  requests create subscriptions at once (a check-then-insert could not be).
- Plan changes: `anchor_at` (the instant billing periods are counted from; a plan change
  keeps the old subscription's, so both sides share the period), `previous_subscription_id`
  and `changed_at` (when a change ended the subscription).
- Trials and commitments: `plan_versions.terms` (`trial_days`, `trial_bills_usage`,
  `minimum_commitment`, `maximum_charge`; part of the version's definition) and
  `subscriptions.terms` (per-subscription overrides); `trial_ends_at` is fixed at creation.
- Coupons and discounts: `coupons.redeemed` counts redemptions under
  `CHECK (redeemed <= max_redemptions)`, incremented in the redeeming transaction, so
  concurrent redemptions never exceed the limit; a discount is one coupon on one
  subscription, applying to the periods from `first_period_start` on.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
CREATE EXTENSION IF NOT EXISTS btree_gist;

ALTER TABLE plan_versions ADD COLUMN terms jsonb NOT NULL DEFAULT '{}';

ALTER TABLE subscriptions ADD COLUMN anchor_at timestamptz;
UPDATE subscriptions SET anchor_at = starts_at;
ALTER TABLE subscriptions ALTER COLUMN anchor_at SET NOT NULL;
ALTER TABLE subscriptions ADD COLUMN previous_subscription_id text REFERENCES subscriptions (id);
ALTER TABLE subscriptions ADD COLUMN changed_at timestamptz;
ALTER TABLE subscriptions ADD COLUMN terms jsonb NOT NULL DEFAULT '{}';
ALTER TABLE subscriptions ADD COLUMN trial_ends_at timestamptz;
CREATE UNIQUE INDEX subscriptions_one_successor ON subscriptions (previous_subscription_id);

CREATE FUNCTION abaxus_charged_metrics(plan text, number integer) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT charge ->> 'metric_key'
    FROM plan_versions, jsonb_array_elements(charges) AS charge
    WHERE plan_code = plan AND version = number AND charge ->> 'metric_key' IS NOT NULL
$$;

CREATE TABLE subscription_metrics (
    subscription_id text NOT NULL REFERENCES subscriptions (id),
    customer_id text NOT NULL,
    metric_key text NOT NULL,
    during tstzrange NOT NULL,
    PRIMARY KEY (subscription_id, metric_key),
    CONSTRAINT subscription_metrics_no_overlap
        EXCLUDE USING gist (customer_id WITH =, metric_key WITH =, during WITH &&)
);

CREATE FUNCTION abaxus_subscription_metrics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM subscription_metrics WHERE subscription_id = NEW.id;
    IF NEW.ends_at IS NULL OR NEW.ends_at > NEW.starts_at THEN
        INSERT INTO subscription_metrics (subscription_id, customer_id, metric_key, during)
        SELECT NEW.id, NEW.customer_id, metric,
               tstzrange(NEW.starts_at, NEW.ends_at, '[)')
        FROM abaxus_charged_metrics(NEW.plan_code, NEW.plan_version) AS metric;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscriptions_charged_metrics
AFTER INSERT OR UPDATE OF starts_at, ends_at ON subscriptions
FOR EACH ROW EXECUTE FUNCTION abaxus_subscription_metrics();

-- Existing subscriptions that overlap fail the upgrade here, naming the customer and metric:
-- end one of them (cancel it) before upgrading.
INSERT INTO subscription_metrics (subscription_id, customer_id, metric_key, during)
SELECT s.id, s.customer_id, metric, tstzrange(s.starts_at, s.ends_at, '[)')
FROM subscriptions s, abaxus_charged_metrics(s.plan_code, s.plan_version) AS metric
WHERE s.ends_at IS NULL OR s.ends_at > s.starts_at;

CREATE TABLE coupons (
    code text PRIMARY KEY,
    name text NOT NULL,
    percent_off numeric(20, 10),
    amount_off numeric(20, 10),
    currency text,
    duration text NOT NULL,
    duration_periods integer,
    metric_keys text[],
    max_redemptions integer,
    redeem_by timestamptz,
    redeemed integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    archived_at timestamptz,
    CONSTRAINT coupons_one_kind CHECK ((percent_off IS NULL) <> (amount_off IS NULL)),
    CONSTRAINT coupons_percent
        CHECK (percent_off IS NULL OR (percent_off > 0 AND percent_off <= 100)),
    CONSTRAINT coupons_amount
        CHECK (amount_off IS NULL OR (amount_off > 0 AND currency IS NOT NULL)),
    CONSTRAINT coupons_duration CHECK (duration IN ('once', 'repeating', 'forever')),
    CONSTRAINT coupons_periods CHECK ((duration = 'repeating') = (duration_periods IS NOT NULL)),
    CONSTRAINT coupons_redemption_limit
        CHECK (redeemed >= 0 AND (max_redemptions IS NULL OR redeemed <= max_redemptions))
);

CREATE TABLE discounts (
    id text PRIMARY KEY,
    subscription_id text NOT NULL REFERENCES subscriptions (id),
    coupon_code text NOT NULL REFERENCES coupons (code),
    first_period_start timestamptz NOT NULL,
    carried_from text REFERENCES discounts (id),
    created_at timestamptz NOT NULL,
    removed_at timestamptz,
    UNIQUE (subscription_id, coupon_code)
);
CREATE INDEX discounts_coupon ON discounts (coupon_code);
"""

DOWNGRADE_SQL = r"""
DROP TABLE discounts;
DROP TABLE coupons;
DROP TRIGGER subscriptions_charged_metrics ON subscriptions;
DROP FUNCTION abaxus_subscription_metrics();
DROP TABLE subscription_metrics;
DROP FUNCTION abaxus_charged_metrics(text, integer);
DROP INDEX subscriptions_one_successor;
ALTER TABLE subscriptions DROP COLUMN trial_ends_at, DROP COLUMN terms, DROP COLUMN changed_at,
    DROP COLUMN previous_subscription_id, DROP COLUMN anchor_at;
ALTER TABLE plan_versions DROP COLUMN terms;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    op.execute(DOWNGRADE_SQL)
