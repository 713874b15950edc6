"""Readiness: the database answers and its schema is at the head revision."""

from __future__ import annotations

import functools

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from core.adapters.postgres.database import get_database
from core.adapters.postgres.migrate import current_revision, head_revision
from core.domain.errors import Unavailable


@functools.lru_cache(maxsize=1)
def _head() -> str:
    return head_revision()


def readiness() -> tuple[bool, dict[str, str | None]]:
    head = _head()
    try:
        with get_database().transaction() as connection:
            connection.execute(text("SELECT 1"))
            current = current_revision(connection)
    except (SQLAlchemyError, RuntimeError, Unavailable) as error:
        return False, {"database": "unreachable", "error": type(error).__name__, "schema": None}
    ok = current == head
    return ok, {
        "database": "ok",
        "schema": "current" if ok else "behind",
        "revision": current,
        "head": head,
    }
