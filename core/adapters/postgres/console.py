"""The console's one row: the key that signs its session cookies."""

from __future__ import annotations

from sqlalchemy import Connection


def signing_secret(connection: Connection, candidate: str) -> str:
    """The stored secret; `candidate` becomes it when there is none yet (first use)."""
    connection.exec_driver_sql(
        "INSERT INTO console_secrets (id, secret) VALUES (1, %(s)s) ON CONFLICT (id) DO NOTHING",
        {"s": candidate},
    )
    return str(
        connection.exec_driver_sql("SELECT secret FROM console_secrets WHERE id = 1").scalar_one()
    )
