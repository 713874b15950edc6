"""Usage events: what a valid event is, its canonical content, and pseudonymized properties.

Validated by hand (not per-event pydantic) because this is the hottest path in ABAXUS:
every rule is here once, each failure names its field and a stable code.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from core.domain.canonical import canonical_json, canonical_text, decimal_text, rfc3339
from core.domain.errors import FieldError
from core.domain.instants import InstantError, to_utc
from core.domain.meters import digest_of
from core.domain.money import AmountError, to_decimal

BATCH_EVENTS_MAX = 500
FUTURE_TOLERANCE = timedelta(minutes=5)
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
IDEMPOTENCY_KEY_CHARS_MAX = 255
ID_CHARS_MAX = 128
PROPERTIES_BYTES_MAX = 8 * 1024
PROPERTIES_DEPTH_MAX = 3
PROPERTIES_KEYS_MAX = 100
FIELDS = frozenset(
    {"customer_id", "metric_key", "value", "timestamp", "idempotency_key", "properties"}
)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")
CUSTOMER_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
METRIC_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PSEUDONYM_PREFIX = "hmac-sha256:"


# The shape of an event as the OpenAPI document states it (validation is parse_event).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["customer_id", "metric_key", "timestamp", "idempotency_key"],
    "additionalProperties": False,
    "properties": {
        "customer_id": {"type": "string", "pattern": CUSTOMER_ID.pattern},
        "metric_key": {"type": "string", "pattern": METRIC_KEY.pattern},
        "value": {
            "type": ["number", "string"],
            "default": 1,
            "description": "exact decimal, at most 10 decimals, |value| < 10^10",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset; at most 5 minutes in the future",
        },
        "idempotency_key": {
            "type": "string",
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_CHARS_MAX,
        },
        "properties": {"type": "object", "description": "at most 100 keys, 3 levels, 8 KiB"},
    },
}

# The body of POST /v1/events/batch (and of the events posted into a correction).
BATCH_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["events"],
    "additionalProperties": False,
    "properties": {
        "events": {
            "type": "array",
            "minItems": 1,
            "maxItems": BATCH_EVENTS_MAX,
            # Each event is validated on its own (§5): an invalid one is answered in its
            # result (`invalid`, with its code and errors) and the others are stored, so
            # any object is a valid item of the request.
            "items": {
                "anyOf": [EVENT_SCHEMA, {"type": "object"}],
                "description": "an event as POST /v1/events takes it; one that is not is "
                "refused in its own result, never the whole batch",
            },
        }
    },
}


# A tuple: one is built per event on the hot path, 3x faster than a frozen dataclass.
class UsageEvent(NamedTuple):
    customer_id: str
    metric_key: str
    value: Decimal
    timestamp: datetime
    idempotency_key: str
    properties: dict[str, Any]
    properties_json: str  # canonical JSON of properties, as stored and as hashed
    content_sha256: str
    digest: int  # core.domain.meters.event_digest, summed by usage checksums
    value_text: str  # decimal_text(value): the canonical texts both hashes are taken over,
    instant: str  # rfc3339(timestamp), and what the batch's COPY sends to PostgreSQL


@dataclass(frozen=True)
class Invalid:
    code: str
    detail: str
    errors: tuple[FieldError, ...]
    idempotency_key: str | None = None  # when it was readable, so producers can correlate


class _Reject(Exception):
    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _shape(field: str, value: Any, depth: int) -> None:
    """At most PROPERTIES_DEPTH_MAX levels, and no float anywhere."""
    if depth > PROPERTIES_DEPTH_MAX:
        raise _Reject(
            "invalid_properties", field, f"nested deeper than {PROPERTIES_DEPTH_MAX} levels"
        )
    if isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            _shape(field, item, depth + 1)
    elif isinstance(value, float):  # only reachable if a caller parsed JSON with floats
        raise _Reject(
            "invalid_properties", field, "numbers must be exact (parse JSON with Decimal)"
        )


def _text(raw: Mapping[str, Any], field: str, pattern: re.Pattern[str], what: str) -> str:
    value = raw.get(field)
    if value is None:
        raise _Reject("missing_field", field, "is required")
    if not isinstance(value, str) or not pattern.match(value):
        raise _Reject("validation_error", field, f"must be {what}")
    return value


def _idempotency_key(raw: Mapping[str, Any]) -> str:
    key = raw.get("idempotency_key")
    if key is None:
        raise _Reject(
            "missing_idempotency_key", "idempotency_key", "is required: every event carries one"
        )
    if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_CHARS_MAX:
        raise _Reject(
            "invalid_idempotency_key",
            "idempotency_key",
            f"must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters",
        )
    if not key.isprintable():  # NUL and lone surrogates are not printable either
        raise _Reject(
            "invalid_idempotency_key", "idempotency_key", "must be printable characters only"
        )
    return key


def _value(raw: Mapping[str, Any]) -> tuple[Decimal, str]:
    """The value and its canonical text (`decimal_text`: an integer's is its digits)."""
    if "value" not in raw:
        return Decimal(1), "1"
    value = raw["value"]
    try:
        number = to_decimal(value)
    except AmountError as error:
        raise _Reject("invalid_value", "value", str(error)) from error
    return number, str(value) if type(value) is int else decimal_text(number)


def _timestamp(raw: Mapping[str, Any], now: datetime) -> tuple[datetime, str]:
    """The instant and its canonical text (`rfc3339`)."""
    text = raw.get("timestamp")
    if text is None:
        raise _Reject("missing_field", "timestamp", "is required")
    form = RFC3339.match(text) if isinstance(text, str) else None
    if form is None:
        raise _Reject(
            "invalid_timestamp",
            "timestamp",
            "must be RFC 3339 with an offset, e.g. 2026-03-17T14:00:00Z (at most microseconds)",
        )
    try:
        instant = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as error:
        raise _Reject(
            "invalid_timestamp", "timestamp", f"is not a real instant: {error}"
        ) from error
    if instant.tzinfo is UTC and text[10] == "T":
        # Sent in UTC ("Z", "+00:00" parse to UTC itself): its date and time digits are
        # the canonical ones, and only the fraction needs rewriting (6 digits, or none).
        fraction = form.group(1)  # "." and 1 to 6 digits, or None
        canonical = text[:19] + (fraction.ljust(7, "0") + "Z" if instant.microsecond else "Z")
    else:
        try:
            instant = to_utc(instant)
        except InstantError as error:
            raise _Reject("invalid_timestamp", "timestamp", str(error)) from error
        canonical = rfc3339(instant)
    if instant > now + FUTURE_TOLERANCE:
        raise _Reject("timestamp_in_future", "timestamp", "is more than 5 minutes in the future")
    if instant < EARLIEST_TIMESTAMP:
        raise _Reject("invalid_timestamp", "timestamp", "is before 2000-01-01")
    return instant, canonical


def _properties(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The properties' shape: an object of at most PROPERTIES_KEYS_MAX keys, nested at most
    PROPERTIES_DEPTH_MAX levels, exact numbers (their characters: `_properties_json`)."""
    properties = raw.get("properties", {})
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise _Reject("invalid_properties", "properties", "must be a JSON object")
    if len(properties) > PROPERTIES_KEYS_MAX:
        raise _Reject("invalid_properties", "properties", f"at most {PROPERTIES_KEYS_MAX} keys")
    for value in properties.values():
        if isinstance(value, dict | list | float):  # flat properties need no walk
            _shape("properties", properties, 1)
            break
    return properties


def _properties_json(
    properties: dict[str, Any], pseudonymized: frozenset[str], secret: bytes
) -> tuple[dict[str, Any], str]:
    """The properties as stored (pseudonymized) and their canonical JSON. Every key and
    string is checked through that one text: a lone surrogate makes it unencodable, and a
    NUL (which jsonb refuses) shows as the escape \\u0000 (so might the six characters
    of that escape as text: then the values themselves decide). Checked before
    pseudonymizing, so a clear value with a lone surrogate is the producer's 422."""
    if not properties:
        return properties, "{}"
    text = canonical_text(properties)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise _Reject("invalid_characters", "properties", "contains a lone surrogate") from error
    if "\\u0000" in text and _has_nul(properties):
        raise _Reject("invalid_characters", "properties", "contains a NUL character")
    if pseudonymized and not pseudonymized.isdisjoint(properties):
        properties = pseudonymize(properties, pseudonymized, secret)
        text = canonical_text(properties)
        size = len(text.encode("utf-8"))
    if size > PROPERTIES_BYTES_MAX:
        raise _Reject(
            "invalid_properties", "properties", f"larger than {PROPERTIES_BYTES_MAX} bytes"
        )
    return properties, text


def pseudonymize(properties: dict[str, Any], keys: frozenset[str], secret: bytes) -> dict[str, Any]:
    """Replace the values of `keys` by HMAC-SHA256(secret, canonical value): equal values
    stay equal (unique_count still works), the clear value is never stored."""
    if not keys or not keys & properties.keys():
        return properties
    result = dict(properties)
    for key in keys & properties.keys():
        digest = hmac.new(secret, canonical_json(properties[key]), hashlib.sha256).hexdigest()
        result[key] = PSEUDONYM_PREFIX + digest
    return result


def content_sha256(
    customer_id: str, metric_key: str, value_text: str, instant: str, properties_json: str
) -> str:
    """What makes two events with one idempotency key the same event: the SHA-256 of
    canonical_json({customer_id, metric_key, properties, timestamp, value}), the timestamp
    as its RFC 3339 text (`instant`), the value as its `decimal_text`. Assembled by hand on
    this hot path: customer ids and metric keys are validated to need no JSON
    escaping, and the properties are already canonical (a test checks the result equals
    canonical_json of the same object)."""
    content = (
        f'{{"customer_id":"{customer_id}","metric_key":"{metric_key}",'
        f'"properties":{properties_json},"timestamp":"{instant}",'
        f'"value":"{value_text}"}}'
    )
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def parse_event(
    raw: Any,
    *,
    now: datetime,
    pseudonymized_keys: frozenset[str] = frozenset(),
    pseudonym_secret: bytes = b"",
) -> UsageEvent | Invalid:
    """One client event to a UsageEvent, or the first reason it is not one."""
    key: str | None = None
    try:
        if not isinstance(raw, dict):
            raise _Reject("validation_error", "event", "must be a JSON object")
        if not FIELDS.issuperset(raw):
            unknown = sorted(set(raw) - FIELDS)
            raise _Reject("validation_error", unknown[0], "is not a field of an event")
        key = _idempotency_key(raw)
        customer_id = _text(raw, "customer_id", CUSTOMER_ID, "1 to 128 of A-Z a-z 0-9 _ . : -")
        metric_key = _text(
            raw, "metric_key", METRIC_KEY, "a metric key (lowercase, [a-z][a-z0-9_]*)"
        )
        value, value_text = _value(raw)  # the text once, for both hashes
        timestamp, instant = _timestamp(raw, now)
        properties, properties_json = _properties_json(
            _properties(raw), pseudonymized_keys, pseudonym_secret
        )
    except _Reject as reject:
        return Invalid(
            reject.code,
            f"{reject.field} {reject.message}",
            (FieldError((reject.field,), reject.message),),
            key,
        )
    content = content_sha256(customer_id, metric_key, value_text, instant, properties_json)
    return UsageEvent(
        customer_id,
        metric_key,
        value,
        timestamp,
        key,
        properties,
        properties_json,
        content,
        digest_of(key, instant, value_text),
        value_text,
        instant,
    )


def month_starts(timestamps: Iterable[datetime]) -> set[datetime]:
    """The UTC months (as their first instant) that these timestamps fall in."""
    months = {
        (u.year, u.month) for u in (t if t.tzinfo is UTC else t.astimezone(UTC) for t in timestamps)
    }
    return {datetime(year, month, 1, tzinfo=UTC) for year, month in months}
