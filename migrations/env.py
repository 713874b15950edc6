"""Alembic environment. The caller (core.adapters.postgres.migrate) passes an open
connection that already holds the migration advisory lock."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `abaxus migrate`, which holds the migration lock")

context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
