"""The instants ABAXUS accepts: aware, and inside a range that survives every UTC offset
(an instant near year 1 or 9999 overflows when moved to UTC: refused, never a 500)."""

from __future__ import annotations

from datetime import UTC, datetime

INSTANT_MIN = datetime(1970, 1, 1, tzinfo=UTC)
INSTANT_MAX = datetime(9000, 1, 1, tzinfo=UTC)  # exclusive


class InstantError(ValueError):
    """Not an instant ABAXUS stores."""


def to_utc(value: datetime) -> datetime:
    """`value` in UTC; refused when naive or outside [1970-01-01, 9000-01-01)."""
    if value.tzinfo is None:
        raise InstantError("needs a UTC offset (RFC 3339, e.g. 2026-03-01T00:00:00Z)")
    try:
        moment = value.astimezone(UTC)
    except OverflowError as error:
        raise InstantError("is outside the supported range (1970 to 8999)") from error
    if not INSTANT_MIN <= moment < INSTANT_MAX:
        raise InstantError("is outside the supported range (1970 to 8999)")
    return moment
