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
  are <= v (rank ceil(p/100 * n) in ascending order). Exact in exact mode; real-time
  answers from a logarithmic sketch within 1% relative error (see sketch_percentile).
- checksum: see usage_checksum: per-event SHA-256 digests summed per meter version.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

from core.domain.canonical import decimal_text, rfc3339
from core.domain.corrections import EMPTY, Supersession
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
    # What corrections supersede among the metric's events (the same for every version).
    superseded: Supersession = EMPTY

    def contains(self, timestamp: datetime) -> bool:
        return self.effective_from <= timestamp and (
            self.effective_to is None or timestamp < self.effective_to
        )

    def keeps(self, properties: Mapping[str, Any]) -> bool:
        return all(
            property_text(properties.get(key)) in allowed for key, allowed in self.filters.items()
        )

    def exclusion(self, properties: Mapping[str, Any]) -> str | None:
        """Why this version's filters leave an event out (the first filter it fails), or
        None when it counts."""
        for key, allowed in self.filters.items():
            text = property_text(properties.get(key))
            if text not in allowed:
                shown = "missing" if text is None else f"{text!r}"
                return f"properties.{key} is {shown}, not one of {', '.join(allowed)}"
        return None

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


def event_digest(idempotency_key: str, timestamp: datetime, value: Decimal) -> int:
    """An event's digest: SHA-256 of `idempotency_key TAB timestamp TAB value LF` (RFC 3339
    UTC timestamp, normalized decimal value) as a 256-bit unsigned big-endian integer.
    Computed once at ingestion and stored with the event."""
    return digest_of(idempotency_key, rfc3339(timestamp), decimal_text(value))


def digest_of(idempotency_key: str, instant: str, value_text: str) -> int:
    """event_digest with the timestamp and the value already in their canonical texts
    (`rfc3339`, `decimal_text`: ingestion has them)."""
    line = f"{idempotency_key}\t{instant}\t{value_text}\n"
    return int.from_bytes(hashlib.sha256(line.encode("utf-8")).digest(), "big")


DIGEST_MODULUS = 2**256


def usage_checksum(per_version: Mapping[int, tuple[int, int]]) -> str:
    """The checksum of counted events from, per meter version, (event count, sum of their
    digests): SHA-256 (hex) over one line per version with events, ascending,
    `version TAB count TAB (digest sum mod 2^256 as 64 hex digits) LF`. Order-independent
    within a version, so SQL computes it in the same pass as the aggregate and rollups can
    carry it; no events: the SHA-256 of nothing."""
    lines = "".join(
        f"{version}\t{count}\t{total % DIGEST_MODULUS:064x}\n"
        for version, (count, total) in sorted(per_version.items())
        if count
    )
    return hashlib.sha256(lines.encode("ascii")).hexdigest()


def events_checksum(counted_events: Iterable[tuple[MeterEvent, int]]) -> str:
    """usage_checksum over events, each with the version that counted it."""
    per_version: dict[int, tuple[int, int]] = {}
    for event, version in counted_events:
        count, total = per_version.get(version, (0, 0))
        digest = event_digest(event.idempotency_key, event.timestamp, event.value)
        per_version[version] = (count + 1, total + digest)
    return usage_checksum(per_version)


# Percentile sketch for real-time rollups (DDSketch-style logarithmic bins): a non-zero
# value v falls in bin ceil(log_gamma(|v|)) of its sign, gamma = (1 + a) / (1 - a); every
# value of a bin is within relative error `a` of the bin's representative
# 2 * gamma^i / (gamma + 1). Bins merge by adding counts, so rollups of any buckets merge.
SKETCH_RELATIVE_ERROR = Decimal("0.01")
_SKETCH = Context(prec=40)
SKETCH_GAMMA = _SKETCH.divide(1 + SKETCH_RELATIVE_ERROR, 1 - SKETCH_RELATIVE_ERROR)
SKETCH_LN_GAMMA = SKETCH_GAMMA.ln(_SKETCH)
VALUE_QUANTUM = Decimal("1e-10")

SketchBin = tuple[int, int]  # (sign -1/0/1, bin index)


def sketch_bin(value: Decimal) -> SketchBin:
    """The bin of a value (the SQL fold computes the same, in PostgreSQL numeric)."""
    if value == 0:
        return (0, 0)
    index = _SKETCH.divide(abs(value).ln(_SKETCH), SKETCH_LN_GAMMA)
    return (1 if value > 0 else -1, int(index.to_integral_value(rounding=ROUND_CEILING)))


def bin_value(sign: int, index: int) -> Decimal:
    """A bin's representative, at the scale values are stored with."""
    if sign == 0:
        return ZERO
    power = _SKETCH.power(SKETCH_GAMMA, index)
    magnitude = _SKETCH.divide(2 * power, SKETCH_GAMMA + 1)
    return (sign * magnitude).quantize(VALUE_QUANTUM, context=_SKETCH)


def _bin_order(item: tuple[SketchBin, int]) -> tuple[int, int]:
    (sign, index), _ = item
    return (sign, index * sign)


def sketch_percentile(bins: Mapping[SketchBin, int], percentile: Decimal) -> Decimal:
    """Nearest rank over the bins: the representative of the bin holding rank
    ceil(p/100 * n). Within SKETCH_RELATIVE_ERROR of the exact nearest-rank value."""
    total = sum(bins.values())
    if total == 0:
        return ZERO
    rank = max(1, math.ceil(percentile / 100 * total))
    seen = 0
    for (sign, index), count in sorted(bins.items(), key=_bin_order):
        seen += count
        if seen >= rank:
            return bin_value(sign, index)
    raise AssertionError("rank beyond the bins' total")  # pragma: no cover - rank <= total
