"""The Idempotency-Key header (API.md, Conventions).

The stored response is committed in the same transaction as the request's effects: the
whole request runs inside one transaction that holds a lock on (API key, idempotency key).
- a replay (same key, same request) returns the stored status, headers and body;
- the same key with another method, path or body -> 422 idempotency_key_reused;
- while the first request with the key is still running -> 409.
Responses of 5xx are not stored (their effects are rolled back), so a retry runs again.
A response that carries a secret (an API key's, a webhook endpoint's) is stored without
it: the secret is shown once, in the first answer, and never kept at rest. Its replay is
the same answer without the secret, with the header `Abaxus-Secret-Redacted` naming the
fields left out (docs/concepts.md, "Idempotency everywhere").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from core.adapters.postgres import idempotency as records
from core.adapters.postgres.database import get_database
from core.domain.canonical import sha256_hex
from core.domain.errors import AbaxusError, IdempotencyInFlight, IdempotencyKeyReused

KEY_CHARS_MAX = 255


@dataclass
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return sha256_hex(method.encode() + b"\x00" + path.encode() + b"\x00" + body)


def run_once(
    *,
    api_key_id: str,
    key: str,
    method: str,
    path: str,
    body: bytes,
    compute: Callable[[], StoredResponse],
    render_error: Callable[[AbaxusError], StoredResponse],
    kept: Callable[[StoredResponse], StoredResponse] = lambda response: response,
) -> tuple[StoredResponse, bool]:
    """(response, replayed). `compute` runs the request; its domain errors are rendered by
    `render_error` and stored like any other answer, after its writes were rolled back.
    `kept` is what of a response may be stored (without its secrets)."""
    fingerprint = request_fingerprint(method, path, body)
    database = get_database()
    with database.transaction() as connection:
        if not records.try_lock(connection, api_key_id, key):
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still in flight; retry later"
            )
        stored = records.find(connection, api_key_id, key)
        if stored is not None:
            if stored["request_sha256"] != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request "
                    f"({stored['method']} {stored['path']})"
                )
            return (
                StoredResponse(
                    stored["response_status"],
                    bytes(stored["response_body"]),
                    dict(stored["response_headers"]),
                ),
                True,
            )
        try:
            with database.savepoint():  # a domain error undoes its writes, the reply is kept
                response = compute()
        except AbaxusError as error:
            response = render_error(error)
        if response.status < 500:
            stored_form = kept(response)
            records.store(
                connection,
                {
                    "api_key_id": api_key_id,
                    "key": key,
                    "method": method,
                    "path": path,
                    "request_sha256": fingerprint,
                    "response_status": stored_form.status,
                    "response_headers": stored_form.headers,
                    "response_body": stored_form.body,
                },
            )
    return response, False


SECRET_REDACTED_HEADER = "Abaxus-Secret-Redacted"  # noqa: S105 - a header name


def without_secrets(response: StoredResponse, fields: tuple[str, ...]) -> StoredResponse:
    """A 2xx JSON object answer with `fields` left out and named in a header."""
    if not fields or not 200 <= response.status < 300:
        return response
    answer = json.loads(response.body)
    if not isinstance(answer, dict) or not set(fields) & set(answer):
        return response
    left_out = [name for name in fields if name in answer]
    kept_answer = {name: value for name, value in answer.items() if name not in fields}
    return StoredResponse(
        response.status,
        json.dumps(kept_answer, ensure_ascii=False, separators=(",", ":")).encode(),
        {**response.headers, SECRET_REDACTED_HEADER: ",".join(left_out)},
    )
