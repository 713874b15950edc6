"""Canonical JSON and SHA-256: the one serialization every checksum in ABAXUS is taken over.

Rules (documented in docs/concepts.md): keys sorted, no insignificant whitespace, UTF-8,
Decimal as its exact string form, datetimes as RFC 3339 UTC with a `Z`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def decimal_text(value: Decimal) -> str:
    """The one text form of an exact number: fixed-point, no exponent, no trailing zeros
    ("12.34", "100", "0.0000000001")."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"not canonically serializable: {type(value).__name__}")


def rfc3339(value: datetime) -> str:
    """UTC, microseconds only when present, `Z` suffix."""
    # isoformat() of a UTC instant ends in "+00:00" and shows microseconds only when
    # present (6 digits): the same text as strftime plus ".%f", several times faster.
    if value.tzinfo is UTC:  # most instants here already are: no conversion to make
        return value.isoformat()[:-6] + "Z"
    if value.tzinfo is None:
        raise ValueError("naive datetime: every instant in ABAXUS carries a UTC offset")
    return value.astimezone(UTC).isoformat()[:-6] + "Z"


# One encoder for every call: json.dumps with options builds a new one each time, and its
# circular-reference bookkeeping costs as much as encoding a small object (values here are
# JSON documents or built by code: never circular; a cycle would still end in RecursionError).
_CANONICAL = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    default=json_default,
    check_circular=False,
)


def canonical_text(value: Any) -> str:
    """canonical_json as text, before its UTF-8 encoding."""
    return _CANONICAL.encode(value)


def canonical_json(value: Any) -> bytes:
    return _CANONICAL.encode(value).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`."""
    return sha256_hex(canonical_json(value))
