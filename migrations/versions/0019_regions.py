"""Regions (API.md §10): what regional databases publish and the central one receives by
PostgreSQL logical replication, laid out so that the apply can never conflict.

- `events.zone`: the residency zone of the event's customer, written at ingest when zones
  are configured; a region's publication for a zone carries only that zone's events (a
  row filter), so a central never receives another zone's customers' events.
- `region_heartbeats`: insert-only, written by a region every few seconds; it replicates
  in commit order with the events, so the newest one a central holds says up to which
  instant it holds every event of that region (`complete_until`). No key: nothing the
  apply inserts can collide. `arrived_at` is filled by the central when the row arrives.
- `customer_homes`: the directory of customers' home regions (no personal data), kept
  from `customers` by a trigger at each central and published to every region, so a
  region can name a customer's home region without holding the customer's data.
- `regions`: the regions a central subscribes to (`POST /v1/regions`).
- `region_event_keys` / `region_duplicates`: the central's cross-region idempotency — the
  copy that counts for each key, and the others (never counted).
- At the central, a REPLICA trigger gives every replicated event a fold job of the central's
  own (one per applied transaction), so the aggregator folds replicated events exactly as
  it folds ingested ones.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

UPGRADE_SQL = r"""
ALTER TABLE events ADD COLUMN zone text;

-- What an invoice lacked when it was drafted or issued (ABAXUS_REGION_POLICY=bill_available).
ALTER TABLE invoices ADD COLUMN complete boolean NOT NULL DEFAULT true;
ALTER TABLE invoices ADD COLUMN regions_lacking text[] NOT NULL DEFAULT '{}';
-- Part of an issued invoice's content: it never changes after the draft.
CREATE FUNCTION abaxus_invoice_completeness_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'draft' AND (NEW.complete, NEW.regions_lacking)
       IS DISTINCT FROM (OLD.complete, OLD.regions_lacking) THEN
    RAISE EXCEPTION 'invoice % is %: its content never changes', OLD.id, OLD.status
      USING ERRCODE = 'AB001';
  END IF;
  RETURN NEW;
END;
$$;
CREATE TRIGGER invoices_completeness_guard BEFORE UPDATE ON invoices
  FOR EACH ROW EXECUTE FUNCTION abaxus_invoice_completeness_guard();

CREATE TABLE region_heartbeats (
  region     text NOT NULL,
  beat_at    timestamptz NOT NULL,
  arrived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX region_heartbeats_newest ON region_heartbeats (region, beat_at DESC);

CREATE TABLE customer_homes (
  region      text NOT NULL,
  customer_id text NOT NULL,
  PRIMARY KEY (region, customer_id)
);
CREATE INDEX customer_homes_customer ON customer_homes (customer_id);
INSERT INTO customer_homes (region, customer_id)
  SELECT region, id FROM customers WHERE region IS NOT NULL;

CREATE FUNCTION abaxus_customer_home() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.region IS NOT DISTINCT FROM NEW.region THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.region IS NOT NULL THEN
    DELETE FROM customer_homes WHERE region = OLD.region AND customer_id = OLD.id;
  END IF;
  IF NEW.region IS NOT NULL THEN
    INSERT INTO customer_homes (region, customer_id) VALUES (NEW.region, NEW.id)
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NEW;
END;
$$;
-- An ordinary trigger: it runs where customers are written (a central, or `all`), not when
-- a region applies replicated customers (their homes replicate on their own).
CREATE TRIGGER customers_home AFTER INSERT OR UPDATE OF region ON customers
  FOR EACH ROW EXECUTE FUNCTION abaxus_customer_home();

CREATE TABLE regions (
  region       text PRIMARY KEY CHECK (region ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  subscription text NOT NULL UNIQUE,
  publication  text NOT NULL,
  connection   text NOT NULL,
  status       text NOT NULL DEFAULT 'attached' CHECK (status IN ('attached', 'detached')),
  reported     text NOT NULL DEFAULT 'catching_up',
  created_at   timestamptz NOT NULL DEFAULT now(),
  detached_at  timestamptz
);

CREATE TABLE region_event_keys (
  idempotency_key text PRIMARY KEY,
  region          text NOT NULL,
  event_id        text NOT NULL,
  received_at     timestamptz NOT NULL,
  customer_id     text NOT NULL,
  metric_key      text NOT NULL,
  timestamp       timestamptz NOT NULL,
  content_sha256  text NOT NULL,
  displaced       jsonb  -- the copy an earlier one took the key from (the fold corrects it)
);

CREATE TABLE region_duplicates (
  region          text NOT NULL,
  event_id        text NOT NULL,
  idempotency_key text NOT NULL,
  customer_id     text NOT NULL,
  metric_key      text NOT NULL,
  timestamp       timestamptz NOT NULL,
  received_at     timestamptz NOT NULL,
  content_sha256  text NOT NULL,
  winner_region   text NOT NULL,
  winner_event_id text NOT NULL,
  recorded_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (region, event_id)
);
CREATE INDEX region_duplicates_metric ON region_duplicates (metric_key);
CREATE INDEX region_duplicates_key ON region_duplicates (idempotency_key);

CREATE TABLE region_counts (
  region text PRIMARY KEY,
  events bigint NOT NULL DEFAULT 0
);

-- At a central: each applied transaction's events get one fold job, made on its first row
-- (the transaction-local setting remembers it). Fires only in the apply worker
-- (session_replication_role = replica): ingest sets its own job. The apply worker runs
-- with an empty search_path, hence the function's own.
CREATE FUNCTION abaxus_region_arrival() RETURNS trigger
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  current text := current_setting('abaxus.arrival_job', true);
  job bigint;
BEGIN
  IF current IS NULL OR current = '' THEN
    INSERT INTO jobs (queue, kind, payload, max_attempts)
      VALUES ('aggregate', 'fold', jsonb_build_object('events', 0, 'region', NEW.region), 8)
      RETURNING id INTO job;
    PERFORM set_config('abaxus.arrival_job', job::text, true);
    PERFORM pg_notify('abaxus_arrivals', NEW.region);  -- delivered when the apply commits
  ELSE
    job := current::bigint;
  END IF;
  NEW.ingest_job_id := job;
  RETURN NEW;
END;
$$;
CREATE TRIGGER events_region_arrival BEFORE INSERT ON events
  FOR EACH ROW EXECUTE FUNCTION abaxus_region_arrival();
ALTER TABLE events ENABLE REPLICA TRIGGER events_region_arrival;

-- Event partitions: a region records each one it creates (insert-only, no key), the row
-- replicates ahead of the partition's first events, and the central creates the same
-- partition as the row is applied, so no replicated event ever finds no partition.
CREATE TABLE event_partitions (
  month      date NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO event_partitions (month)
  SELECT to_date(substring(c.relname FROM 8), 'YYYY_MM')
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{4}_[0-9]{2}$';

CREATE OR REPLACE FUNCTION abaxus_ensure_event_partition(month_start date) RETURNS text
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  first date := date_trunc('month', month_start)::date;
  name text := 'events_' || to_char(first, 'YYYY_MM');
BEGIN
  IF to_regclass(name) IS NOT NULL THEN
    RETURN name;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('abaxus_event_partitions'));
  -- A query, not to_regclass: it sees a partition another transaction (two subscriptions'
  -- apply workers) committed while this one waited for the lock.
  IF EXISTS (SELECT 1 FROM pg_class WHERE relname = name
             AND relnamespace = 'public'::regnamespace) THEN
    RETURN name;
  END IF;
  EXECUTE format(
    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
    name,
    to_char(first, 'YYYY-MM-DD') || ' 00:00:00+00',
    to_char((first + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
  );
  INSERT INTO event_partitions (month) VALUES (first);
  RETURN name;
END;
$$;

CREATE FUNCTION abaxus_replicated_partition() RETURNS trigger
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
  PERFORM abaxus_ensure_event_partition(NEW.month);
  RETURN NEW;
END;
$$;
CREATE TRIGGER event_partitions_replicated AFTER INSERT ON event_partitions
  FOR EACH ROW EXECUTE FUNCTION abaxus_replicated_partition();
ALTER TABLE event_partitions ENABLE REPLICA TRIGGER event_partitions_replicated;
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
