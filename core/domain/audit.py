"""The audit chain: each row's hash covers its content and the previous row's hash, so an
edit or a removal anywhere breaks every hash after it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.domain.canonical import sha256_of

GENESIS_SHA256 = "0" * 64
CHAINED_FIELDS = (
    "occurred_at",
    "actor",
    "action",
    "entity",
    "entity_id",
    "request_id",
    "state_sha256",
    "changes",
)


def row_sha256(prev_sha256: str, row: Mapping[str, Any]) -> str:
    return sha256_of({"prev": prev_sha256, **{name: row.get(name) for name in CHAINED_FIELDS}})


@dataclass(frozen=True)
class ChainBreak:
    row_id: int
    reason: str


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> tuple[int, ChainBreak | None]:
    """Walk rows in id order; returns (rows checked, first break or None)."""
    previous = GENESIS_SHA256
    checked = 0
    for row in rows:
        checked += 1
        if row["prev_sha256"] != previous:
            return checked, ChainBreak(row["id"], "prev_sha256 does not match the previous row")
        if row_sha256(previous, row) != row["row_sha256"]:
            return checked, ChainBreak(row["id"], "row content does not match its row_sha256")
        previous = row["row_sha256"]
    return checked, None
