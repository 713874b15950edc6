"""Event validation rules (pure), each with its stable code."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.events import Invalid, UsageEvent, month_starts, parse_event, pseudonymize

NOW = datetime(2026, 3, 17, 14, 0, tzinfo=UTC)
GOOD = {
    "customer_id": "cust_acme",
    "metric_key": "api_calls",
    "value": 1,
    "timestamp": "2026-03-17T14:00:00Z",
    "idempotency_key": "evt_1",
    "properties": {"region": "eu-west-1"},
}


def _parse(**changes):
    raw = {**GOOD, **changes}
    for key in [k for k, v in changes.items() if v is ...]:
        del raw[key]
    return parse_event(raw, now=NOW)


def _parse_with(keys, secret, **changes):
    return parse_event(
        {**GOOD, **changes}, now=NOW, pseudonymized_keys=keys, pseudonym_secret=secret
    )


def test_a_valid_event_is_parsed_exactly():
    event = _parse(value=Decimal("0.1000000001"), timestamp="2026-03-17T15:00:00.123456+01:00")
    assert isinstance(event, UsageEvent)
    assert event.value == Decimal("0.1000000001")
    assert event.timestamp == datetime(2026, 3, 17, 14, 0, 0, 123456, tzinfo=UTC)
    assert len(event.content_sha256) == 64


def test_value_defaults_to_one_and_strings_are_numbers_too():
    assert _parse(value=...).value == Decimal(1)
    assert _parse(value="2.5").value == Decimal("2.5")


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"idempotency_key": ...}, "missing_idempotency_key", "idempotency_key"),
        ({"idempotency_key": ""}, "invalid_idempotency_key", "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "invalid_idempotency_key", "idempotency_key"),
        ({"idempotency_key": "tab\there"}, "invalid_idempotency_key", "idempotency_key"),
        ({"idempotency_key": 12}, "invalid_idempotency_key", "idempotency_key"),
        ({"customer_id": ...}, "missing_field", "customer_id"),
        ({"customer_id": "has space"}, "validation_error", "customer_id"),
        ({"metric_key": ...}, "missing_field", "metric_key"),
        ({"metric_key": "API"}, "validation_error", "metric_key"),
        ({"value": "NaN"}, "invalid_value", "value"),
        ({"value": "Infinity"}, "invalid_value", "value"),
        ({"value": 0.5}, "invalid_value", "value"),
        ({"value": "0.00000000001"}, "invalid_value", "value"),
        ({"value": "10000000000"}, "invalid_value", "value"),
        ({"value": True}, "invalid_value", "value"),
        ({"timestamp": ...}, "missing_field", "timestamp"),
        ({"timestamp": "2026-03-17T14:00:00"}, "invalid_timestamp", "timestamp"),
        ({"timestamp": "2026-03-17"}, "invalid_timestamp", "timestamp"),
        ({"timestamp": "20260317T140000Z"}, "invalid_timestamp", "timestamp"),
        ({"timestamp": "2026-02-30T00:00:00Z"}, "invalid_timestamp", "timestamp"),
        ({"timestamp": "2026-03-17T14:00:00.1234567Z"}, "invalid_timestamp", "timestamp"),
        ({"timestamp": "1999-12-31T23:59:59Z"}, "invalid_timestamp", "timestamp"),
        ({"timestamp": "2026-03-17T14:05:01Z"}, "timestamp_in_future", "timestamp"),
        ({"properties": []}, "invalid_properties", "properties"),
        ({"properties": {"a": {"b": {"c": {"d": 1}}}}}, "invalid_properties", "properties"),
        ({"properties": {"blob": "x" * 9000}}, "invalid_properties", "properties"),
        ({"properties": {f"k{n}": 1 for n in range(101)}}, "invalid_properties", "properties"),
        ({"properties": {"name": "nul\x00byte"}}, "invalid_characters", "properties"),
        ({"properties": {"bad\x00key": 1}}, "invalid_characters", "properties"),
        ({"properties": {"name": "lone \ud800 surrogate"}}, "invalid_characters", "properties"),
        ({"properties": {"lone \udfff key": 1}}, "invalid_characters", "properties"),
        ({"properties": {"tags": ["ok", "n\x00l"]}}, "invalid_characters", "properties"),
        ({"properties": {"tags": ["\ud83d"]}}, "invalid_characters", "properties"),
        ({"customer": "typo"}, "validation_error", "customer"),
    ],
)
def test_each_invalid_event_names_its_field_and_a_stable_code(changes, code, field):
    result = _parse(**changes)
    assert isinstance(result, Invalid), result
    assert result.code == code
    assert result.errors[0].loc == (field,)


def test_five_minutes_in_the_future_is_still_accepted():
    assert isinstance(_parse(timestamp=(NOW + timedelta(minutes=5)).isoformat()), UsageEvent)


def test_not_an_object_is_invalid():
    assert parse_event(["x"], now=NOW).code == "validation_error"


def test_content_hash_ignores_the_spelling_of_equal_values_and_instants():
    a = _parse(value="1.0", timestamp="2026-03-17T15:00:00+01:00")
    b = _parse(value=1, timestamp="2026-03-17T14:00:00Z")
    c = _parse(value=2)
    assert a.content_sha256 == b.content_sha256 != c.content_sha256


def test_pseudonymized_properties_are_hmacs_equal_for_equal_values():
    secret = b"s" * 32
    one = pseudonymize(
        {"patient_id": "p-1", "region": "eu"}, frozenset({"patient_id", "email"}), secret
    )
    two = pseudonymize({"patient_id": "p-1"}, frozenset({"patient_id"}), secret)
    other = pseudonymize({"patient_id": "p-2"}, frozenset({"patient_id"}), secret)
    assert one["patient_id"].startswith("hmac-sha256:") and "p-1" not in one["patient_id"]
    assert one["patient_id"] == two["patient_id"] != other["patient_id"]
    assert one["region"] == "eu"
    assert (
        pseudonymize({"patient_id": "p-1"}, frozenset({"patient_id"}), b"t" * 32)["patient_id"]
        != one["patient_id"]
    )


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"region": "eu-west-1", "n": 3, "ok": True, "none": None},
        {"zé": "ünïcode ✓", "nested": {"b": "x", "a": Decimal("1.50")}},
    ],
)
def test_the_hand_assembled_content_equals_canonical_json_of_the_event(properties):
    import hashlib

    from core.domain.canonical import canonical_json

    event = _parse(properties=properties, value=Decimal("12.3400"))
    expected = canonical_json(
        {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "properties": properties,
            "timestamp": "2026-03-17T14:00:00Z",
            "value": Decimal("12.34"),
        }
    )
    assert event.properties_json == canonical_json(properties).decode()
    assert event.content_sha256 == hashlib.sha256(expected).hexdigest()


@given(
    st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from(
                [UTC, timezone(timedelta(hours=-11)), timezone(timedelta(hours=14))]
            ),
        ),
        max_size=20,
    )
)
def test_month_starts_are_the_utc_months_of_the_timestamps(timestamps: list[datetime]) -> None:
    expected = {
        t.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for t in timestamps
    }
    assert month_starts(timestamps) == expected
    assert all(m.tzinfo is UTC and m.day == 1 for m in month_starts(timestamps))


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 2),
        max_value=datetime(2026, 3, 17),
        timezones=st.sampled_from(
            [
                UTC,
                timezone(timedelta(0)),
                timezone(timedelta(hours=-11)),
                timezone(timedelta(hours=5, minutes=30)),
            ]
        ),
    ),
    st.sampled_from(["iso", "Z", "z", "+00:00", "-00:00", "space", "t", "millis"]),
    st.one_of(
        st.integers(-(10**9), 10**9),
        st.decimals(
            places=4, allow_nan=False, allow_infinity=False, min_value=-1000, max_value=1000
        ),
    ),
)
def test_every_spelling_of_an_instant_and_a_value_has_the_canonical_texts(
    instant: datetime, spelling: str, value: object
) -> None:
    """parse_event takes the canonical instant from the text when it was sent in UTC: it
    equals rfc3339 of the parsed instant, and the stored digest equals event_digest."""
    from core.domain.canonical import decimal_text, rfc3339
    from core.domain.meters import event_digest

    utc = instant.astimezone(UTC)
    text = {
        "iso": instant.isoformat(),
        "Z": utc.isoformat().replace("+00:00", "Z"),
        "z": utc.isoformat().replace("+00:00", "z"),
        "+00:00": utc.isoformat(),
        "-00:00": utc.isoformat().replace("+00:00", "-00:00"),
        "space": utc.isoformat().replace("T", " "),
        "t": utc.isoformat().replace("T", "t"),
        "millis": utc.isoformat(timespec="milliseconds"),
    }[spelling]
    event = _parse(timestamp=text, value=value)
    assert isinstance(event, UsageEvent), (text, event)
    expected = (
        utc.replace(microsecond=utc.microsecond // 1000 * 1000) if spelling == "millis" else utc
    )
    assert event.timestamp == expected
    assert event.instant == rfc3339(expected)
    assert event.value_text == decimal_text(Decimal(value))  # type: ignore[arg-type]
    assert event.digest == event_digest(event.idempotency_key, expected, event.value)


def test_month_start_of_an_offset_timestamp_is_its_utc_month() -> None:
    # 2026-03-01T01:00+02:00 is 2026-02-28T23:00Z: the event belongs to February's partition.
    local = datetime(2026, 3, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert month_starts([local]) == {datetime(2026, 2, 1, tzinfo=UTC)}


def test_the_six_characters_backslash_u0000_are_text_not_a_nul():
    event = _parse(properties={"path": "C:\\u0000dir", "k\\u0000": "v"})
    assert isinstance(event, UsageEvent)
    assert event.properties == {"path": "C:\\u0000dir", "k\\u0000": "v"}


def test_a_pseudonymized_property_is_checked_before_it_is_hashed():
    """Its clear value never reaches storage, but a lone surrogate in it is still the
    producer's 422, not a server error while hashing it."""
    keys, secret = frozenset({"patient_id"}), b"s" * 32
    bad = _parse_with(keys, secret, properties={"patient_id": "p\ud800"})
    assert isinstance(bad, Invalid) and bad.code == "invalid_characters"
    good = _parse_with(keys, secret, properties={"patient_id": "p-1", "site": "a"})
    assert isinstance(good, UsageEvent)
    assert good.properties["patient_id"].startswith("hmac-sha256:")
    assert "p-1" not in good.properties_json and '"site":"a"' in good.properties_json
