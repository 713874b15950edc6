"""Connections and transactions.

One `Database` per process, created lazily (functions-framework imports modules in the
gunicorn master before forking, so nothing may connect at import time).

`transaction()` is ambient: a transaction opened inside another on the same context joins
it as a SAVEPOINT. That lets a service own its transaction boundary while the HTTP
plumbing wraps a whole request in one outer transaction when an Idempotency-Key must be
committed together with the request's effects. Work that must only happen once the data
is durable (emitting a CloudEvent) is registered with `after_commit`.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Connection, Engine, create_engine, make_url

from core.config import settings
from core.domain.canonical import canonical_json

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
    def __init__(self, database_url: str, *, pool_size: int, statement_timeout_ms: int) -> None:
        self.url = database_url
        self.engine: Engine = create_engine(
            sqlalchemy_url(database_url),
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            pool_timeout=30,
            # JSONB in and out without floats: Decimal stays exact both ways.
            json_serializer=lambda value: canonical_json(value).decode("utf-8"),
            json_deserializer=lambda text: json.loads(text, parse_float=Decimal),
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={statement_timeout_ms} -c timezone=UTC",
                "application_name": "abaxus",
            },
        )

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        current = _current.get()
        if current is not None and current.database is self:
            with current.connection.begin_nested():
                yield current.connection
            return
        state: _Transaction
        with self.engine.connect() as connection:
            state = _Transaction(self, connection)
            token = _current.set(state)
            try:
                with connection.begin():
                    yield connection
            finally:
                _current.reset(token)
        for callback in state.after_commit:
            callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the outermost transaction has committed (now, if none is open)."""
        current = _current.get()
        if current is None or current.database is not self:
            callback()
        else:
            current.after_commit.append(callback)

    def dispose(self) -> None:
        self.engine.dispose()


_database: Database | None = None
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


def reset_database() -> None:
    """Drop the process's pool (tests switch databases; the dev server sets DATABASE_URL late)."""
    global _database  # noqa: PLW0603
    with _lock:
        if _database is not None:
            _database.dispose()
        _database = None
