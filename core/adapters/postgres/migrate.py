"""Apply Alembic migrations under a PostgreSQL advisory lock, so concurrent starts
(several pods, or `make run` twice) never race; the second waits and finds nothing to do."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

import migrations
from core.adapters.postgres.database import sqlalchemy_url

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
# Arbitrary but fixed: the advisory lock key every ABAXUS process uses for migrations.
MIGRATION_LOCK_KEY = 0x0ABA_0001

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    exists = connection.execute(text("SELECT to_regclass('alembic_version')")).scalar()
    if exists is None:
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_to_head(database_url: str) -> str:
    """Bring the schema to head; returns the revision now applied."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                before = current_revision(connection)
                connection.commit()
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                connection.commit()
                after = current_revision(connection)
                if before != after:
                    log.info("migrated", extra={"from_revision": before, "to_revision": after})
                return after or ""
            finally:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
    finally:
        engine.dispose()
