"""Test fixtures. Isolation (docs/operations.md, "Tests"):

- one fresh database per test session (`abaxus_test_<pid>`) on the embedded PostgreSQL
  server (or on the server DATABASE_URL names), migrated to head, dropped at the end;
- before each test that touches the database, every table is emptied with TRUNCATE under
  `session_replication_role = replica` (so the triggers that protect history in real use
  do not fire for the test harness itself).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text

from core.adapters.postgres.database import get_database, reset_database, sqlalchemy_url
from core.adapters.postgres.embedded import create_database, drop_database, start_embedded
from core.adapters.postgres.migrate import upgrade_to_head
from core.config import reload_settings
from core.services import api_keys
from core.services.caller import SYSTEM

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _admin_url() -> str:
    server_url = os.environ.get("ABAXUS_TEST_SERVER_URL") or os.environ.get("DATABASE_URL")
    if server_url:
        return server_url
    return start_embedded(PROJECT_ROOT / ".abaxus", database="postgres")


def _with_database(url: str, database: str) -> str:
    return sqlalchemy.make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def admin_url() -> str:
    return _admin_url()


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    name = f"abaxus_test_{os.getpid()}"
    drop_database(admin_url, name)
    create_database(admin_url, name)
    url = _with_database(admin_url, name)
    upgrade_to_head(url)
    os.environ["DATABASE_URL"] = url
    os.environ.pop("K_SINK", None)
    reload_settings()
    reset_database()
    yield url
    reset_database()
    drop_database(admin_url, name)


def truncate_all(url: str) -> None:
    engine = sqlalchemy.create_engine(sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        tables = (
            connection.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def db(database_url: str) -> str:
    """A database with the schema at head and every table empty."""
    truncate_all(database_url)
    return database_url


@pytest.fixture
def admin_secret(db: str) -> str:
    return api_keys.create_key(SYSTEM, name="test-admin", scopes=["admin"]).secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def engine(db: str) -> sqlalchemy.Engine:
    return get_database().engine
