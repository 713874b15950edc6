"""Connections and transactions.

One `Database` per process, created lazily (functions-framework imports modules in the
gunicorn master before forking, so nothing may connect at import time).

`transaction()` is ambient: opened inside another on the same context, it joins it. A
service owns its transaction boundary when called alone, and the HTTP plumbing runs a
whole request (authentication, handler, Idempotency-Key record) as one transaction, so a
request commits entirely or not at all. `savepoint()` is for the few places that must
undo part of a transaction and go on (an idempotent error reply, one failed queue job).
Work that must only happen once the data is durable (emitting a CloudEvent) is registered
with `after_commit`. A lost connection surfaces as `Unavailable` (503, retryable).
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from core.config import settings
from core.domain.canonical import canonical_json
from core.domain.errors import Unavailable

CONNECT_TIMEOUT_SECONDS = 10


def sqlalchemy_url(database_url: str) -> str:
    """Any libpq URL (postgresql://, postgres://) as a SQLAlchemy psycopg 3 URL."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@dataclass
class _Transaction:
    database: Database
    connection: Connection
    after_commit: list[Callable[[], None]] = field(default_factory=list)


_current: contextvars.ContextVar[_Transaction | None] = contextvars.ContextVar(
    "abaxus_transaction", default=None
)


class Database:
    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int,
        statement_timeout_ms: int,
        generic_plans: bool = False,
    ) -> None:
        self.url = database_url
        self.statement_timeout_ms = statement_timeout_ms
        self._maintenance: Engine | None = None
        self.engine: Engine = create_engine(
            sqlalchemy_url(database_url),
            pool_size=pool_size,
            max_overflow=0,
            # No pre-ping (a round trip per request): a connection found dead fails its
            # request with 503 database_unavailable and the pool replaces it.
            pool_pre_ping=False,
            pool_recycle=1800,
            pool_timeout=30,
            # An error's text never carries a statement's parameters (request data).
            hide_parameters=True,
            # JSONB in and out without floats: Decimal stays exact both ways.
            json_serializer=lambda value: canonical_json(value).decode("utf-8"),
            json_deserializer=lambda text: json.loads(text, parse_float=Decimal),
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC"
                + (" -c plan_cache_mode=force_generic_plan" if generic_plans else ""),
                "application_name": "abaxus",
            },
        )

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        current = _current.get()
        if current is not None and current.database is self:
            yield current.connection
            return
        state: _Transaction
        try:
            with self.engine.connect() as connection:
                state = _Transaction(self, connection)
                token = _current.set(state)
                try:
                    with connection.begin():
                        yield connection
                finally:
                    _current.reset(token)
        except (OperationalError, InterfaceError) as error:
            if (
                isinstance(error, DBAPIError)
                and not error.connection_invalidated
                and _is_query_error(error)
            ):
                raise
            raise Unavailable(
                "the database is unavailable; retry", code="database_unavailable"
            ) from error
        for callback in state.after_commit:
            callback()

    @contextmanager
    def savepoint(self) -> Iterator[Connection]:
        """A nested part of the open transaction that can fail alone."""
        current = _current.get()
        if current is None or current.database is not self:
            with self.transaction() as connection:
                yield connection
            return
        with current.connection.begin_nested():
            yield current.connection

    @property
    def maintenance_engine(self) -> Engine:
        """Unpooled connections for rare DDL (event partitions), so that a request holding
        its pooled connection never waits for a second one from the same pool."""
        if self._maintenance is None:
            self._maintenance = create_engine(
                sqlalchemy_url(self.url), poolclass=NullPool, hide_parameters=True
            )
        return self._maintenance

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only REPEATABLE READ transaction on a connection of its own: every
        statement sees the same committed state (comparisons that must not see a commit
        land between two reads). Unpooled: operator reads, not the request path."""
        try:
            with self.maintenance_engine.connect() as raw:
                connection = raw.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                with connection.begin():
                    connection.exec_driver_sql(
                        f"SET LOCAL statement_timeout = {int(self.statement_timeout_ms)}"
                    )
                    connection.exec_driver_sql("SET LOCAL timezone = 'UTC'")
                    yield connection
        except (OperationalError, InterfaceError) as error:
            if isinstance(error, DBAPIError) and _is_query_error(error):
                raise
            raise Unavailable(
                "the database is unavailable; retry", code="database_unavailable"
            ) from error

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the outermost transaction has committed (now, if none is open)."""
        current = _current.get()
        if current is None or current.database is not self:
            callback()
        else:
            current.after_commit.append(callback)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._maintenance is not None:
            self._maintenance.dispose()


def _is_query_error(error: DBAPIError) -> bool:
    """Errors of a statement (a cancelled or timed-out query), not of the connection."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate is not None and not str(sqlstate).startswith("08")


def driver_rows(
    connection: Connection, statement: str, params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """The rows of constant SQL run by psycopg itself, in the connection's open transaction.

    For the ingestion hot path only (the API-key lookup, the event store): SQLAlchemy's
    result set-up for a textual statement (cursor metadata merged, row processors, Row
    objects) cost as much CPU as psycopg's execution of it (py-spy of the single-event
    load: 8.3% and 8.2% of a worker's GIL time). Errors surface as `exec_driver_sql`
    raises them: wrapped in SQLAlchemy's DBAPIError classes, the connection invalidated
    when it is lost (so `transaction()` answers Unavailable and the pool replaces it)."""
    pooled = connection.connection
    driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        with driver.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()
    except psycopg.Error as error:
        lost = connection.dialect.is_disconnect(error, pooled.dbapi_connection, None)  # type: ignore[arg-type]  # psycopg is the dialect's DBAPI
        wrapped = DBAPIError.instance(
            statement,
            dict(params),
            error,
            psycopg.Error,
            connection_invalidated=lost,
            dialect=connection.dialect,
        )
        if lost:
            connection.invalidate(wrapped)
        raise wrapped from error


def after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once the transaction open on this context commits (now if none is)."""
    current = _current.get()
    if current is None:
        callback()
    else:
        current.after_commit.append(callback)


_database: Database | None = None
_group_database: Database | None = None
GROUP_POOL_SIZE = 2
_lock = threading.Lock()


def get_database() -> Database:
    """The process's database, created on first use from the settings."""
    global _database  # noqa: PLW0603 - one pool per process, created lazily after fork
    if _database is None:
        with _lock:
            if _database is None:
                config = settings()
                if not config.database_url:
                    raise RuntimeError(
                        "DATABASE_URL is not set: start through `abaxus dev` (embedded PostgreSQL) "
                        "or point DATABASE_URL at a PostgreSQL 15+ server"
                    )
                _database = Database(
                    config.database_url,
                    pool_size=config.pool_size,
                    statement_timeout_ms=config.abaxus_statement_timeout_ms,
                )
    return _database


def get_group_database() -> Database:
    """A small pool of its own for group-committed writes: the requests waiting for a group
    hold connections of the main pool, so the group's writer must not need one of those."""
    global _group_database  # noqa: PLW0603
    if _group_database is None:
        with _lock:
            if _group_database is None:
                config = settings()
                assert config.database_url
                _group_database = Database(
                    config.database_url,
                    pool_size=GROUP_POOL_SIZE,
                    # Only the group's constant statements run here, prepared after five
                    # runs; PostgreSQL kept planning the key lookup anew on every run
                    # (custom plans, pg_prepared_statements): a generic plan saves 8% of
                    # the database's CPU per group of six.
                    generic_plans=True,
                    statement_timeout_ms=config.abaxus_statement_timeout_ms,
                )
    return _group_database


def reset_database() -> None:
    """Drop the process's pools (tests switch databases; the dev server sets DATABASE_URL late)."""
    global _database, _group_database  # noqa: PLW0603
    with _lock:
        for database in (_database, _group_database):
            if database is not None:
                database.dispose()
        _database = _group_database = None
