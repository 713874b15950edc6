"""Foundation: api keys, idempotency records, audit log, job queue, CloudEvent inbox,
and the reusable trigger that makes tables append-only.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLSTATE raised when a protected row would be deleted or rewritten. Tests assert it.
UPGRADE_SQL = r"""
CREATE FUNCTION abaxus_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'abaxus: % on % is refused: this table keeps history (archive instead)',
    TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'AB001', HINT = 'rows here are never deleted; see docs/concepts.md';
END;
$$;

-- Attach the refusal to a table: DELETE and TRUNCATE always, UPDATE too when append-only.
CREATE FUNCTION abaxus_protect(target regclass, append_only boolean) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  name text := replace(target::text, '.', '_');
BEGIN
  EXECUTE format('CREATE TRIGGER %I BEFORE DELETE ON %s FOR EACH ROW '
                 'EXECUTE FUNCTION abaxus_refuse_change()', name || '_no_delete', target);
  EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %s FOR EACH STATEMENT '
                 'EXECUTE FUNCTION abaxus_refuse_change()', name || '_no_truncate', target);
  IF append_only THEN
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %s FOR EACH ROW '
                   'EXECUTE FUNCTION abaxus_refuse_change()', name || '_no_update', target);
  END IF;
END;
$$;

CREATE TABLE api_keys (
  id            text PRIMARY KEY,
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  scopes        text[] NOT NULL
                CHECK (cardinality(scopes) >= 1
                       AND scopes <@ ARRAY['events:write', 'read', 'admin']::text[]),
  prefix        text NOT NULL,
  secret_sha256 text NOT NULL UNIQUE,
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz
);
CREATE INDEX api_keys_prefix ON api_keys (prefix);
SELECT abaxus_protect('api_keys', false);

CREATE TABLE idempotency_records (
  api_key_id       text NOT NULL REFERENCES api_keys (id),
  key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
  method           text NOT NULL,
  path             text NOT NULL,
  request_sha256   text NOT NULL,
  response_status  integer NOT NULL,
  response_headers jsonb NOT NULL DEFAULT '{}'::jsonb,
  response_body    bytea NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (api_key_id, key)
);

CREATE TABLE audit_log (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at  timestamptz NOT NULL,
  actor        text NOT NULL,
  action       text NOT NULL,
  entity       text NOT NULL,
  entity_id    text NOT NULL,
  request_id   text,
  state_sha256 text NOT NULL,
  changes      jsonb,
  prev_sha256  text NOT NULL,
  row_sha256   text NOT NULL UNIQUE
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);
SELECT abaxus_protect('audit_log', true);

CREATE TABLE jobs (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue        text NOT NULL,
  kind         text NOT NULL,
  payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
  dedupe_key   text,
  status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
  attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
  run_after    timestamptz NOT NULL DEFAULT now(),
  last_error   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz,
  UNIQUE (queue, dedupe_key)
);
-- The claim query: oldest due pending job of a queue.
CREATE INDEX jobs_claim ON jobs (queue, run_after, id) WHERE status = 'pending';
CREATE INDEX jobs_dead ON jobs (queue, id) WHERE status = 'dead';

-- CloudEvents a function has handled: (source, id) is unique per the CloudEvents spec, so a
-- redelivery finds its row and changes nothing. Written in the handler's own transaction.
CREATE TABLE cloudevent_inbox (
  function    text NOT NULL,
  source      text NOT NULL,
  id          text NOT NULL,
  type        text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (function, source, id)
);
"""


def upgrade() -> None:
    op.execute(UPGRADE_SQL)


def downgrade() -> None:
    raise RuntimeError("ABAXUS migrations are forward-only: billing history is never rewritten")
