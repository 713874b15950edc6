"""Billing periods: half-open [start, end), anchored at the subscription's billing anchor
(its start; after a plan change, the start of the subscription it replaced), UTC.

Period k starts at `anchor + k * interval`, always computed from the anchor (never from
the previous period), so a Jan 31 anchor gives Feb 28 (29 in leap years), Mar 31, Apr 30…
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from dateutil.relativedelta import relativedelta

PERIOD_INDEX_MAX = 100_000


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


_STEP = {
    Interval.DAY: relativedelta(days=1),
    Interval.WEEK: relativedelta(weeks=1),
    Interval.MONTH: relativedelta(months=1),
    Interval.QUARTER: relativedelta(months=3),
    Interval.YEAR: relativedelta(years=1),
}
# A lower bound on an interval's length in days, to jump close to the right index.
_MIN_DAYS = {
    Interval.DAY: 1,
    Interval.WEEK: 7,
    Interval.MONTH: 28,
    Interval.QUARTER: 89,
    Interval.YEAR: 365,
}


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end

    @property
    def days(self) -> int:
        return (self.end - self.start).days


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("naive datetime: every instant in ABAXUS carries a UTC offset")
    return instant.astimezone(UTC)


def period_start(anchor: datetime, interval: Interval, index: int) -> datetime:
    return _utc(anchor) + _STEP[interval] * index


def period_at(anchor: datetime, interval: Interval, index: int) -> Period:
    if not 0 <= index <= PERIOD_INDEX_MAX:
        raise ValueError(f"period index out of range: {index}")
    return Period(period_start(anchor, interval, index), period_start(anchor, interval, index + 1))


def period_index(anchor: datetime, interval: Interval, instant: datetime) -> int:
    """The index of the period that contains `instant` (which must not be before the anchor)."""
    anchor, instant = _utc(anchor), _utc(instant)
    if instant < anchor:
        raise ValueError("instant before the subscription's start")
    index = max(0, (instant - anchor).days // _MIN_DAYS[interval] - 1)
    while period_start(anchor, interval, index) > instant:
        index -= 1
    while period_start(anchor, interval, index + 1) <= instant:
        index += 1
    return index


def period_containing(anchor: datetime, interval: Interval, instant: datetime) -> Period:
    """The period that contains `instant` (which must not be before the anchor)."""
    return period_at(anchor, interval, period_index(anchor, interval, instant))


def is_period_boundary(anchor: datetime, interval: Interval, instant: datetime) -> bool:
    instant = _utc(instant)
    return instant >= _utc(anchor) and period_containing(anchor, interval, instant).start == instant
