import re
from datetime import UTC, datetime, timedelta

import pytest

from core import auth
from core.adapters.queue import BACKOFF_MAX_SECONDS, backoff
from core.domain.errors import ValidationFailed
from core.domain.pagination import LIMIT_DEFAULT, decode_cursor, encode_cursor, parse_limit
from core.domain.stats import WINDOW_DAYS_MAX, windows
from functions.routes import owner_of


def test_queue_backoff_doubles_then_caps():
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(40) == timedelta(seconds=BACKOFF_MAX_SECONDS)


def test_limit_defaults_and_bounds():
    assert parse_limit(None) == LIMIT_DEFAULT
    assert parse_limit("1000") == 1000
    for bad in ("0", "1001", "-1", "ten", "1.5", "", "²", "١٢", " 5"):
        with pytest.raises(ValidationFailed):
            parse_limit(bad)


def test_cursors_round_trip_and_garbage_is_a_validation_error():
    assert decode_cursor(encode_cursor({"after": "key_9"})) == {"after": "key_9"}
    with pytest.raises(ValidationFailed) as caught:
        decode_cursor("not base64 json!")
    assert caught.value.code == "invalid_cursor"


def test_scopes_admin_allows_all_others_only_themselves():
    assert auth.allows(frozenset({"admin"}), "events:write")
    assert auth.allows(frozenset({"read"}), "read")
    assert not auth.allows(frozenset({"read"}), "events:write")
    assert not auth.allows(frozenset({"events:write"}), "read")


def test_secrets_are_long_random_and_only_their_hash_matches():
    secret = auth.new_secret()
    assert secret.startswith("abx_") and len(secret) == 44
    assert auth.secret_matches(secret, auth.secret_sha256(secret))
    assert not auth.secret_matches(secret + "x", auth.secret_sha256(secret))


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("/v1/events", "ingest"),
        ("/v1/events/batch", "ingest"),
        ("/v1/eventsx", None),
        ("/v1/usage/summary", "aggregate"),
        ("/v1/invoices/inv_1/issue", "invoice"),
        ("/v1/webhooks/stripe", "charge"),
        ("/dashboard", "api"),
        ("/nope", None),
    ],
)
def test_paths_belong_to_the_function_owning_their_longest_prefix(path, owner):
    assert owner_of(path) == owner


def test_event_ids_are_distinct_96_bit_random_hex() -> None:
    from core.services.ingest import _new_event_ids

    ids = _new_event_ids(500)
    assert len(ids) == len(set(ids)) == 500
    assert all(re.fullmatch(r"evt_[0-9a-f]{24}", event_id) for event_id in ids)
    assert _new_event_ids(1)[0] not in ids and _new_event_ids(0) == []


def test_a_stats_window_is_bounded_so_the_one_before_it_is_an_instant_too():
    start = datetime(2026, 12, 6, tzinfo=UTC)
    found = windows(start, start + timedelta(days=WINDOW_DAYS_MAX), start)
    assert found.previous_start == start - timedelta(days=WINDOW_DAYS_MAX)
    with pytest.raises(ValueError, match="at most"):  # 6850 - 4824 years was a 500
        windows(start, datetime(6850, 5, 4, tzinfo=UTC), start)
