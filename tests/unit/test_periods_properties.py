"""Hypothesis: billing periods tile time exactly, for any anchor, interval and instant."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.periods import Interval, period_at, period_containing

anchors = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650))


@settings(max_examples=300, deadline=None)
@given(anchors, st.sampled_from(list(Interval)), offsets)
def test_the_period_containing_an_instant_contains_it_and_is_one_of_the_anchored_periods(
    anchor, interval, offset
):
    instant = anchor + offset
    period = period_containing(anchor, interval, instant)
    assert period.start <= instant < period.end
    # it is period k for some k, computed from the anchor, and the next one starts at its end
    later = period_containing(anchor, interval, period.end)
    assert later.start == period.end
    if period.start > anchor:
        earlier = period_containing(anchor, interval, period.start - timedelta(microseconds=1))
        assert earlier.end == period.start


@settings(max_examples=200, deadline=None)
@given(anchors, st.sampled_from(list(Interval)), st.integers(min_value=0, max_value=120))
def test_periods_are_contiguous_and_never_empty(anchor, interval, index):
    this, following = period_at(anchor, interval, index), period_at(anchor, interval, index + 1)
    assert this.end == following.start
    assert this.end > this.start
    assert 1 <= this.days <= 366
