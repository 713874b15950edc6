"""Dead letters: every CloudEvent that could not be delivered is kept, as received, with
why (Knative's knativeerrordest / knativeerrorcode / knativeerrordata extensions)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from core.adapters.postgres import dead_letters as rows
from core.adapters.postgres.database import get_database
from core.domain.errors import NotFound, Unavailable
from core.services import audit, notify
from core.services.caller import Caller
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


def decoded_error(data: str | None) -> dict[str, Any] | None:
    """Knative's knativeerrordata is the base64 of the failed answer's body: ours is a
    problem document, shown decoded (None when it is not one)."""
    if not data:
        return None
    try:
        decoded = json.loads(base64.b64decode(data, validate=True))
    except (ValueError, binascii.Error):
        return None
    return decoded if isinstance(decoded, dict) else None


def view(row: dict[str, Any], redelivered_at: Any = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "received_at": row["received_at"],
        "ce_id": row["ce_id"],
        "ce_source": row["ce_source"],
        "ce_type": row["ce_type"],
        "error_dest": row["error_dest"],
        "error_code": row["error_code"],
        "error_data": row["error_data"],
        "error": decoded_error(row["error_data"]),
        "redelivered_at": redelivered_at,
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
        again = rows.last_redeliveries(connection, [row["id"] for row in page])
    return [view(row, again.get(row["id"])) for row in page], next_cursor


def redeliver(caller: Caller, dead_letter_id: int) -> dict[str, Any]:
    """Send a dead-lettered CloudEvent through the bus again, exactly as received (its id
    unchanged: a consumer that meanwhile handled it acknowledges it as a redelivery)."""
    with get_database().transaction() as connection:
        row = rows.get(connection, dead_letter_id)
        if row is None:
            raise NotFound(f"no dead letter {dead_letter_id}")
        if not notify.bus().resend(dict(row["headers"]), bytes(row["body"])):
            raise Unavailable(
                "the broker did not take the event; try again", code="redelivery_failed"
            )
        rows.record_redelivery(connection, dead_letter_id, caller.actor)
        audit.record(
            connection,
            caller,
            action="dead_letter.redelivered",
            entity="dead_letter",
            entity_id=str(dead_letter_id),
            state={"ce_id": row["ce_id"], "ce_type": row["ce_type"]},
        )
        again = rows.last_redeliveries(connection, [dead_letter_id])
    return view(row, again.get(dead_letter_id))
