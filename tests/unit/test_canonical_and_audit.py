from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.domain.audit import GENESIS_SHA256, row_sha256, verify_chain
from core.domain.canonical import canonical_json, decimal_text, rfc3339, sha256_of


def test_canonical_json_sorts_keys_and_keeps_decimals_exact():
    value = {"b": Decimal("0.1000000001"), "a": [1, "x"], "c": datetime(2026, 3, 1, tzinfo=UTC)}
    assert canonical_json(value) == b'{"a":[1,"x"],"b":"0.1000000001","c":"2026-03-01T00:00:00Z"}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1E+2", "100"),
        ("1.500", "1.5"),
        ("0.0000000001", "0.0000000001"),
        ("-0.0", "0"),
        ("12.3400000000", "12.34"),
    ],
)
def test_decimals_have_one_text_form_fixed_point_without_trailing_zeros(value, text):
    assert decimal_text(Decimal(value)) == text
    assert canonical_json({"v": Decimal(value)}) == b'{"v":"' + text.encode() + b'"}'


def test_rfc3339_is_utc_with_z_and_refuses_naive_datetimes():
    eastern = timezone(timedelta(hours=-5))
    assert (
        rfc3339(datetime(2026, 3, 1, 7, 0, 0, 250, tzinfo=eastern)) == "2026-03-01T12:00:00.000250Z"
    )
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 3, 1))


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_rfc3339_text_is_the_strftime_form_whatever_the_offset(instant, offset_minutes):
    shown = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    expected = instant.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{instant.microsecond:06d}" if instant.microsecond else ""
    )
    assert rfc3339(shown) == expected + "Z"


def _chain(count):
    rows, previous = [], GENESIS_SHA256
    for index in range(count):
        row = {
            "id": index + 1,
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=index),
            "actor": "key_1",
            "action": "thing.created",
            "entity": "thing",
            "entity_id": f"t{index}",
            "request_id": None,
            "state_sha256": sha256_of({"n": index}),
            "changes": None,
            "prev_sha256": previous,
        }
        row["row_sha256"] = row_sha256(previous, row)
        previous = row["row_sha256"]
        rows.append(row)
    return rows


def test_an_intact_chain_verifies():
    assert verify_chain(_chain(5)) == (5, None)


def test_an_edited_row_breaks_the_chain_at_that_row():
    rows = _chain(5)
    rows[2]["entity_id"] = "forged"
    checked, broken = verify_chain(rows)
    assert broken is not None and broken.row_id == 3 and checked == 3


def test_a_removed_row_breaks_the_chain_at_the_next_row():
    rows = _chain(5)
    del rows[1]
    _, broken = verify_chain(rows)
    assert broken is not None and broken.row_id == 3
    assert "prev_sha256" in broken.reason


_JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_JSON_LIKE)
def test_the_compiled_encoders_write_what_json_dumps_writes(value):
    """canonical_json and responses encode with a C encoder built once: the same text as
    json.dumps with the same options, for every kind of value they meet."""
    import json

    from core.domain.canonical import canonical_text, json_default
    from functions.http import to_json

    assert canonical_text(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default
    )
    assert to_json(value) == json.dumps(value, ensure_ascii=False, default=json_default).encode()
