"""The overview's figures, pure: latency histogram buckets and their percentile, the change
against the previous window, and the windows themselves."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from dateutil.relativedelta import relativedelta

# Upper bounds (ms) of the latency buckets: a request of 7.3 ms counts in the 8 ms bucket;
# a p95 is reported as the bound of the bucket it falls in (at most ~25% above the truth
# in this ladder). The last bucket holds everything slower than 10 s.
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250,
    300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 2_147_483_647,
)  # fmt: skip
CHANGE_PLACES = Decimal("0.001")
WINDOW_DAYS_MAX = 3660  # ten years, compared with the ten before


def bucket_of(milliseconds: float) -> int:
    """The bound of the bucket a duration falls in (durations are measured, not money)."""
    return LATENCY_BUCKETS_MS[
        min(bisect_left(LATENCY_BUCKETS_MS, milliseconds), len(LATENCY_BUCKETS_MS) - 1)
    ]


def percentile(counts: Mapping[int, int], fraction: Decimal) -> int | None:
    """The bucket bound at which `fraction` of the requests are at or below: nearest rank
    over the buckets. None without requests."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = (Decimal(total) * fraction).to_integral_value(rounding=ROUND_CEILING)
    seen = 0
    for bound in sorted(counts):
        seen += counts[bound]
        if seen >= rank:
            return bound
    return max(counts)


def change(value: Decimal | int | None, previous: Decimal | int | None) -> Decimal | None:
    """(value - previous) / previous to three places, half up; None when previous is 0 or
    either is unknown."""
    if value is None or previous is None or previous == 0:
        return None
    return ((Decimal(value) - Decimal(previous)) / Decimal(previous)).quantize(
        CHANGE_PLACES, rounding=ROUND_HALF_UP
    )


@dataclass(frozen=True)
class Windows:
    start: datetime
    end: datetime
    previous_start: datetime
    previous_end: datetime


def windows(start: datetime | None, end: datetime | None, now: datetime) -> Windows:
    """The window asked for (default: the current UTC calendar month) and the one of equal
    length just before it — for a calendar month (the default, or a window from the first
    of a month to the first of the next), the previous calendar month."""
    if start is None and end is None:
        first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return Windows(
            first, first + relativedelta(months=1), first - relativedelta(months=1), first
        )
    if start is None or end is None:
        raise ValueError("give both from and to, or neither")
    if end <= start:
        raise ValueError("to must be after from")
    if end - start > timedelta(days=WINDOW_DAYS_MAX):
        # The previous window starts as far before `from`: bounded, it is an instant too.
        raise ValueError(f"a window covers at most {WINDOW_DAYS_MAX} days")
    first = start.astimezone(UTC)
    if first == first.replace(day=1, hour=0, minute=0, second=0, microsecond=0) and (
        end == first + relativedelta(months=1)
    ):
        return Windows(start, end, first - relativedelta(months=1), start)
    return Windows(start, end, start - (end - start), start)
