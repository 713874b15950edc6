"""The one error hierarchy. Each error carries a stable machine-readable `code`.

How an error becomes an HTTP status is decided in one table at the HTTP boundary
(functions/http.py); the domain only says what went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field: where (`loc`, a path into the body) and what."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "invalid"


@dataclass
class AbaxusError(Exception):
    detail: str
    code: str = "error"
    errors: Sequence[FieldError] = field(default_factory=tuple)
    title: str = "Error"

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def _error(name: str, code: str, title: str) -> type[AbaxusError]:
    def __init__(
        self: AbaxusError,
        detail: str,
        *,
        code: str = code,
        errors: Sequence[FieldError] = (),
    ) -> None:
        AbaxusError.__init__(self, detail=detail, code=code, errors=tuple(errors), title=title)

    cls = type(name, (AbaxusError,), {"__init__": __init__, "__doc__": title})
    cls.__module__ = __name__
    return cls


# Bad input that a client can fix: 422 unless a more precise class fits.
ValidationFailed = _error("ValidationFailed", "validation_error", "Validation failed")
MalformedRequest = _error("MalformedRequest", "malformed_request", "Malformed request")
PayloadTooLarge = _error("PayloadTooLarge", "payload_too_large", "Payload too large")
NotFound = _error("NotFound", "not_found", "Not found")
MethodNotAllowed = _error("MethodNotAllowed", "method_not_allowed", "Method not allowed")
Conflict = _error("Conflict", "conflict", "Conflict")
Unauthenticated = _error("Unauthenticated", "unauthenticated", "Unauthenticated")
Forbidden = _error("Forbidden", "forbidden", "Forbidden")
IdempotencyKeyReused = _error(
    "IdempotencyKeyReused", "idempotency_key_reused", "Idempotency key reused"
)
IdempotencyInFlight = _error(
    "IdempotencyInFlight", "idempotency_request_in_flight", "Request with this key in flight"
)
NotImplementedYet = _error("NotImplementedYet", "not_implemented", "Not implemented")
# A CloudEvent that can never be processed (the broker must not retry it).
UnprocessableEvent = _error("UnprocessableEvent", "unprocessable_event", "Unprocessable event")
# Something outside the request's control failed; retrying later may succeed.
Unavailable = _error("Unavailable", "unavailable", "Service unavailable")
