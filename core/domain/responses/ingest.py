"""What the ingest routes answer, as hand-written JSON schemas: those answers are written by
hand for speed (functions/ingest.py `single_event_reply`, `batch_response`), so no model
renders them; tests/unit/test_batch_response.py holds the answers to these schemas."""

from __future__ import annotations

from typing import Any

from core.domain.events import IDEMPOTENCY_KEY_CHARS_MAX

_KEY = {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_CHARS_MAX}
_EVENT_ID = {"type": "string", "pattern": "^evt_[0-9a-f]{24}$"}

EVENT_ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "the event is durably stored (accepted), or was already (duplicate), or is "
    "stored but held, uncounted, because it breaks its metric's quarantining contract "
    "(quarantined: GET /v1/quarantine lists it)",
    "required": ["status", "idempotency_key", "id"],
    "additionalProperties": False,
    "properties": {
        "status": {"type": "string", "enum": ["accepted", "duplicate", "quarantined"]},
        "idempotency_key": _KEY,
        "id": _EVENT_ID,
    },
}

BATCH_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "one result per event, in order; one bad event never rejects the others",
    "required": ["results", "accepted", "duplicates", "quarantined", "rejected"],
    "additionalProperties": False,
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "status", "outcome"],
                "additionalProperties": False,
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "status": {
                        "type": "integer",
                        "enum": [202, 200, 409, 422],
                        "description": "202 accepted or quarantined, 200 duplicate, "
                        "409 conflict, 422 invalid",
                    },
                    "outcome": {
                        "type": "string",
                        "enum": ["accepted", "duplicate", "quarantined", "conflict", "invalid"],
                    },
                    "idempotency_key": {
                        "type": "string",
                        "description": "as sent (an invalid event's key may be invalid)",
                    },
                    "id": _EVENT_ID,
                    "code": {"type": "string", "description": "why it was refused"},
                    "detail": {"type": "string"},
                    "errors": {
                        "type": "array",
                        "description": "an invalid event's problems: where (loc) and what; for "
                        "a contract_violation, `type` is the rule broken",
                        "items": {
                            "type": "object",
                            "required": ["loc", "msg", "type"],
                            "additionalProperties": False,
                            "properties": {
                                "loc": {
                                    "type": "array",
                                    "items": {"type": ["string", "integer"]},
                                },
                                "msg": {"type": "string"},
                                "type": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
        "accepted": {"type": "integer", "minimum": 0},
        "duplicates": {"type": "integer", "minimum": 0},
        "quarantined": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
    },
}
