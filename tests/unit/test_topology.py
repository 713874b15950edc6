from datetime import UTC, datetime, timedelta

import pytest

from functions.topology import Delivery, Subscription, cron_matches, filter_matches, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT0.5S", timedelta(seconds=0.5)),
        ("PT1S", timedelta(seconds=1)),
        ("PT1M30S", timedelta(seconds=90)),
        ("PT2H", timedelta(hours=2)),
        ("P1DT1H", timedelta(days=1, hours=1)),
    ],
)
def test_iso8601_durations_parse_to_their_exact_length(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["1s", "PT", "P", "PT-1S", "5"])
def test_malformed_durations_are_refused(text):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


def test_exponential_backoff_doubles_the_delay_per_retry_like_knative():
    delivery = Delivery(retry=5, backoff_policy="exponential", backoff_delay=timedelta(seconds=0.5))
    assert [delivery.delay(n).total_seconds() for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_linear_backoff_grows_by_the_delay_per_retry():
    delivery = Delivery(retry=2, backoff_policy="linear", backoff_delay=timedelta(seconds=5))
    assert [delivery.delay(n).total_seconds() for n in (1, 2)] == [5.0, 10.0]


def test_trigger_delivery_inherits_broker_defaults_for_unset_fields():
    broker = Delivery.parse({"retry": 5, "backoffDelay": "PT0.5S"})
    trigger = Delivery.parse({"timeout": "PT30S"}, broker)
    assert (trigger.retry, trigger.backoff_delay, trigger.timeout) == (
        5,
        timedelta(seconds=0.5),
        timedelta(seconds=30),
    )


def test_legacy_attribute_filter_needs_every_attribute_to_match_exactly():
    sub = Subscription("t", "aggregate", {"type": "a.b", "source": "/s"}, (), Delivery())
    assert sub.matches({"type": "a.b", "source": "/s", "id": "1"})
    assert not sub.matches({"type": "a.b", "source": "/other"})
    assert not sub.matches({"type": "a.b"})


def test_new_filters_dialects_prefix_suffix_any_all_not():
    attrs = {"type": "dev.abaxus.payment.failed.v1", "source": "/charge"}
    assert filter_matches({"prefix": {"type": "dev.abaxus.payment."}}, attrs)
    assert filter_matches({"suffix": {"type": ".v1"}}, attrs)
    assert not filter_matches({"exact": {"type": "dev.abaxus.payment.succeeded.v1"}}, attrs)
    assert filter_matches(
        {"any": [{"exact": {"source": "/x"}}, {"exact": {"source": "/charge"}}]}, attrs
    )
    assert not filter_matches(
        {"all": [{"exact": {"source": "/x"}}, {"exact": {"source": "/charge"}}]}, attrs
    )
    assert filter_matches({"not": {"exact": {"source": "/x"}}}, attrs)


def test_filters_override_the_legacy_filter_when_both_are_set():
    sub = Subscription("t", "f", {"type": "never"}, ({"prefix": {"type": "dev."}},), Delivery())
    assert sub.matches({"type": "dev.x"})


def test_unsupported_cesql_dialect_is_refused_rather_than_ignored():
    with pytest.raises(ValueError, match="cesql"):
        filter_matches({"cesql": "type = 'x'"}, {"type": "x"})


@pytest.mark.parametrize(
    ("schedule", "instant", "fires"),
    [
        ("* * * * *", datetime(2026, 3, 1, 12, 7, tzinfo=UTC), True),
        ("0 * * * *", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), True),
        ("0 * * * *", datetime(2026, 3, 1, 12, 1, tzinfo=UTC), False),
        ("*/15 * * * *", datetime(2026, 3, 1, 12, 45, tzinfo=UTC), True),
        ("*/15 * * * *", datetime(2026, 3, 1, 12, 46, tzinfo=UTC), False),
        ("0 2 * * 1-5", datetime(2026, 11, 23, 2, 0, tzinfo=UTC), True),  # a Monday
        ("0 2 * * 0,6", datetime(2026, 11, 23, 2, 0, tzinfo=UTC), False),
        ("30 4 1 1 *", datetime(2027, 1, 1, 4, 30, tzinfo=UTC), True),
    ],
)
def test_cron_schedules_fire_on_exactly_their_minutes(schedule, instant, fires):
    assert cron_matches(schedule, instant) is fires


def test_cron_with_wrong_field_count_is_refused():
    with pytest.raises(ValueError, match="5 fields"):
        cron_matches("* * * *", datetime(2026, 1, 1, tzinfo=UTC))
