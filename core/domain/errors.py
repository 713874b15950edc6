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


class _Coded(AbaxusError):
    """An error kind with a default code and title; `code` may be made more precise."""

    default_code = "error"
    default_title = "Error"

    def __init__(
        self, detail: str, *, code: str | None = None, errors: Sequence[FieldError] = ()
    ) -> None:
        super().__init__(
            detail=detail,
            code=code or self.default_code,
            errors=tuple(errors),
            title=self.default_title,
        )


class ValidationFailed(_Coded):
    """Bad input that a client can fix."""

    default_code, default_title = "validation_error", "Validation failed"


class MalformedRequest(_Coded):
    default_code, default_title = "malformed_request", "Malformed request"


class PayloadTooLarge(_Coded):
    default_code, default_title = "payload_too_large", "Payload too large"


class NotFound(_Coded):
    default_code, default_title = "not_found", "Not found"


class MethodNotAllowed(_Coded):
    default_code, default_title = "method_not_allowed", "Method not allowed"


class UnsupportedMediaType(_Coded):
    default_code, default_title = "unsupported_media_type", "Unsupported media type"


class Conflict(_Coded):
    default_code, default_title = "conflict", "Conflict"


class Unauthenticated(_Coded):
    default_code, default_title = "unauthenticated", "Unauthenticated"


class Forbidden(_Coded):
    default_code, default_title = "forbidden", "Forbidden"


class IdempotencyKeyReused(_Coded):
    default_code, default_title = "idempotency_key_reused", "Idempotency key reused"


class IdempotencyInFlight(_Coded):
    default_code = "idempotency_request_in_flight"
    default_title = "Request with this key in flight"


class NotImplementedYet(_Coded):
    default_code, default_title = "not_implemented", "Not implemented"


class UnprocessableEvent(_Coded):
    """A CloudEvent that can never be processed (the broker must not retry it)."""

    default_code, default_title = "unprocessable_event", "Unprocessable event"


class WrongRegion(_Coded):
    """The request belongs to another region (residency, or a catalog write sent to a
    region): 421 Misdirected Request, naming where it belongs."""

    default_code, default_title = "wrong_region", "Wrong region"


class Unavailable(_Coded):
    """Something outside the request's control failed; retrying later may succeed."""

    default_code, default_title = "unavailable", "Service unavailable"
