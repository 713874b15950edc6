"""Keyset pagination behind opaque cursors, the same for every list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.domain.pagination import decode_cursor, encode_cursor

Fetch = Callable[[Any, int], list[dict[str, Any]]]


def paginate(
    fetch: Fetch, *, cursor: str | None, limit: int, key: str
) -> tuple[list[dict[str, Any]], str | None]:
    """`fetch(after, n)` returns up to n rows ordered by `key`, strictly after `after`."""
    position = decode_cursor(cursor)
    after = position.get("after") if position else None
    rows = fetch(after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor({"after": rows[-1][key]}) if more and rows else None
    return rows, next_cursor
