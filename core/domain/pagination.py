"""Opaque list cursors and limits: `?limit=` (default 100, max 1000) and `?cursor=`."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from core.domain.errors import FieldError, ValidationFailed

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000
CURSOR_CHARS_MAX = 2000


def parse_limit(raw: str | None) -> int:
    """`?limit=` absent is the default; present, a whole number from 1 to LIMIT_MAX (an
    empty `?limit=` is not a number either)."""
    if raw is None:
        return LIMIT_DEFAULT
    # ASCII digits only: str.isdigit() is true for "²", which int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= LIMIT_MAX:
        raise ValidationFailed(
            f"limit must be a whole number from 1 to {LIMIT_MAX}",
            errors=[FieldError(("query", "limit"), f"expected 1..{LIMIT_MAX}, got {raw[:20]!r}")],
        )
    return int(raw)


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    invalid = ValidationFailed(
        "cursor is not one this API returned",
        code="invalid_cursor",
        errors=[FieldError(("query", "cursor"), "malformed cursor")],
    )
    if len(cursor) > CURSOR_CHARS_MAX:
        raise invalid
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise invalid from error
    if not isinstance(value, dict):
        raise invalid
    return value
