"""Dead letters: every CloudEvent that could not be delivered is kept, as received, with
why (Knative's knativeerrordest / knativeerrorcode / knativeerrordata extensions)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from core.adapters.postgres import dead_letters as rows
from core.adapters.postgres.database import get_database
from core.services.listing import paginate

HEADER_VALUE_CHARS_MAX = 4096


def keep(attributes: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> bool:
    """True if newly kept, False for a redelivered dead letter."""
    with get_database().transaction() as connection:
        return rows.keep(
            connection,
            {
                "ce_id": str(attributes["id"]),
                "ce_source": str(attributes["source"]),
                "ce_type": str(attributes["type"]),
                "error_dest": _text(attributes.get("knativeerrordest")),
                "error_code": _text(attributes.get("knativeerrorcode")),
                "error_data": _text(attributes.get("knativeerrordata")),
                "headers": {k: v[:HEADER_VALUE_CHARS_MAX] for k, v in headers.items()},
                "body": body,
            },
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:HEADER_VALUE_CHARS_MAX]


def view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "received_at": row["received_at"],
        "ce_id": row["ce_id"],
        "ce_source": row["ce_source"],
        "ce_type": row["ce_type"],
        "error_dest": row["error_dest"],
        "error_code": row["error_code"],
        "error_data": row["error_data"],
        "headers": row["headers"],
        "body_base64": base64.b64encode(bytes(row["body"])).decode("ascii"),
    }


def list_dead_letters(
    *, ce_type: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(connection, ce_type=ce_type, after=after, limit=n),
            cursor=cursor,
            limit=limit,
            key="id",
        )
    return [view(row) for row in page], next_cursor
