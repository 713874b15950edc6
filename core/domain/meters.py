"""Meter evaluation, pure: which metric version counts an event, whether its filters keep
it, which group it falls in, and the seven aggregations as mergeable accumulators.

Definitions (the same for real-time rollups and exact scans — docs/concepts.md):
- An event belongs to the version whose [effective_from, effective_to) contains its
  timestamp; an event exactly at a version's effective_from belongs to that version.
- A property matches a filter when its text form is one of the listed values: strings as
  they are, numbers as their normalized decimal text ("1.50" -> "1.5"), true/false, and
  a missing property matches nothing.
- Groups are the text forms of the group_by properties, in order; a missing one is null.
- sum, count, max, min as usual; with no events every aggregation is 0.
- last: the value of the event with the latest timestamp; ties go to the greatest
  idempotency key (byte order), so the answer never depends on arrival order.
- unique_count: the number of distinct text forms of properties[unique_property]; events
  without that property are not counted.
- percentile p: nearest rank — the smallest value v such that at least p% of the values
  are <= v (rank ceil(p/100 * n) in ascending order).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.domain.canonical import decimal_text, rfc3339
from core.domain.metrics import Aggregation

ZERO = Decimal(0)


def property_text(value: Any) -> str | None:
    """The text form of a property value, as filters, groups and distinct counts see it."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return decimal_text(Decimal(value))
    return str(value)


@dataclass(frozen=True)
class MeterVersion:
    version: int
    aggregation: Aggregation
    effective_from: datetime
    effective_to: datetime | None = None
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    unique_property: str | None = None
    percentile: Decimal | None = None

    def contains(self, timestamp: datetime) -> bool:
        return self.effective_from <= timestamp and (
            self.effective_to is None or timestamp < self.effective_to
        )

    def keeps(self, properties: Mapping[str, Any]) -> bool:
        return all(
            property_text(properties.get(key)) in allowed for key, allowed in self.filters.items()
        )

    def group_of(self, properties: Mapping[str, Any]) -> tuple[str | None, ...]:
        return tuple(property_text(properties.get(key)) for key in self.group_by)


@dataclass(frozen=True)
class MeterEvent:
    idempotency_key: str
    timestamp: datetime
    value: Decimal
    properties: Mapping[str, Any] = field(default_factory=dict)


class Meter:
    """A metric's versions in time order; finds the version counting an event."""

    def __init__(self, versions: Sequence[MeterVersion]) -> None:
        self.versions = sorted(versions, key=lambda v: v.effective_from)
        self._starts = [v.effective_from for v in self.versions]

    def version_at(self, timestamp: datetime) -> MeterVersion | None:
        index = bisect.bisect_right(self._starts, timestamp) - 1
        if index < 0:
            return None
        version = self.versions[index]
        return version if version.contains(timestamp) else None


@dataclass
class Accumulator:
    """Everything any of the seven aggregations needs, mergeable in any order."""

    count: int = 0
    total: Decimal = ZERO
    smallest: Decimal | None = None
    largest: Decimal | None = None
    last: tuple[datetime, str, Decimal] | None = None  # (timestamp, idempotency key, value)
    distinct: set[str] = field(default_factory=set)
    values: list[Decimal] = field(default_factory=list)

    def add(self, event: MeterEvent, version: MeterVersion) -> None:
        self.count += 1
        self.total += event.value
        self.smallest = event.value if self.smallest is None else min(self.smallest, event.value)
        self.largest = event.value if self.largest is None else max(self.largest, event.value)
        candidate = (event.timestamp, event.idempotency_key, event.value)
        if self.last is None or candidate[:2] > self.last[:2]:
            self.last = candidate
        if version.aggregation == Aggregation.UNIQUE_COUNT and version.unique_property is not None:
            text = property_text(event.properties.get(version.unique_property))
            if text is not None:
                self.distinct.add(text)
        if version.aggregation == Aggregation.PERCENTILE:
            self.values.append(event.value)

    def merge(self, other: Accumulator) -> Accumulator:
        merged = Accumulator(
            count=self.count + other.count,
            total=self.total + other.total,
            smallest=_pick(min, self.smallest, other.smallest),
            largest=_pick(max, self.largest, other.largest),
            last=_pick(max, self.last, other.last, key=lambda item: item[:2]),
            distinct=self.distinct | other.distinct,
            values=self.values + other.values,
        )
        return merged

    def result(self, version: MeterVersion) -> Decimal:
        aggregation = version.aggregation
        if aggregation == Aggregation.COUNT:
            return Decimal(self.count)
        if aggregation == Aggregation.UNIQUE_COUNT:
            return Decimal(len(self.distinct))
        if self.count == 0:
            return ZERO
        if aggregation == Aggregation.SUM:
            return self.total
        if aggregation == Aggregation.PERCENTILE:
            assert version.percentile is not None
            return nearest_rank(self.values, version.percentile)
        single = {
            Aggregation.MAX: self.largest,
            Aggregation.MIN: self.smallest,
            Aggregation.LAST: self.last[2] if self.last else None,
        }
        value = single[aggregation]
        assert value is not None
        return value


def _pick(choose: Any, a: Any, b: Any, key: Any = None) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b, key=key) if key is not None else choose(a, b)


def nearest_rank(values: Sequence[Decimal], percentile: Decimal) -> Decimal:
    if not values:
        return ZERO
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


GroupKey = tuple[int, tuple[str | None, ...]]  # (meter version, group values)


def aggregate(meter: Meter, events: Iterable[MeterEvent]) -> dict[GroupKey, Accumulator]:
    """Fold events into one accumulator per (version, group); events that no version
    counts, or that a version's filters drop, are left out."""
    accumulators: dict[GroupKey, Accumulator] = {}
    for event in events:
        version = meter.version_at(event.timestamp)
        if version is None or not version.keeps(event.properties):
            continue
        key = (version.version, version.group_of(event.properties))
        accumulators.setdefault(key, Accumulator()).add(event, version)
    return accumulators


def merge_all(parts: Iterable[Mapping[GroupKey, Accumulator]]) -> dict[GroupKey, Accumulator]:
    merged: dict[GroupKey, Accumulator] = {}
    for part in parts:
        for key, accumulator in part.items():
            merged[key] = merged[key].merge(accumulator) if key in merged else accumulator
    return merged


def counted(meter: Meter, events: Iterable[MeterEvent]) -> list[tuple[MeterEvent, int]]:
    """The events a meter counts, each with the version that counts it."""
    found = []
    for event in events:
        version = meter.version_at(event.timestamp)
        if version is not None and version.keeps(event.properties):
            found.append((event, version.version))
    return found


def checksum_line(event: MeterEvent, version: int) -> str:
    fields = (
        event.idempotency_key,
        rfc3339(event.timestamp),
        decimal_text(event.value),
        str(version),
    )
    return "\t".join(fields) + "\n"


def events_checksum(counted_events: Iterable[tuple[MeterEvent, int]]) -> str:
    """SHA-256 (hex) over the canonical lines of the counted events, ordered by
    (timestamp, idempotency_key in byte order)."""
    ordered = sorted(
        counted_events, key=lambda item: (item[0].timestamp, item[0].idempotency_key.encode())
    )
    digest = hashlib.sha256()
    for event, version in ordered:
        digest.update(checksum_line(event, version).encode("utf-8"))
    return digest.hexdigest()
