"""Invoice numbers: `<prefix>-<year of issue>-<6 digits>`, one gap-free series per prefix
and year (the counter is a database row taken under its lock in the issuing transaction:
a rolled-back issue gives its number back)."""

from __future__ import annotations

from datetime import UTC, datetime

SEQUENCE_DIGITS = 6


def series(prefix: str, issued_at: datetime) -> str:
    return f"{prefix}-{issued_at.astimezone(UTC).year}"


def number(series_name: str, sequence: int) -> str:
    if sequence < 1:
        raise ValueError("invoice sequences start at 1")
    return f"{series_name}-{sequence:0{SEQUENCE_DIGITS}d}"
