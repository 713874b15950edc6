"""Meter evaluation: versions by event time, filters, groups, the seven aggregations, and
(Hypothesis) that partial aggregates merged in any order equal one pass over the events."""

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.meters import (
    SKETCH_RELATIVE_ERROR,
    Accumulator,
    Meter,
    MeterEvent,
    MeterVersion,
    aggregate,
    event_digest,
    events_checksum,
    merge_all,
    nearest_rank,
    property_text,
    sketch_bin,
    sketch_percentile,
    usage_checksum,
)
from core.domain.metrics import Aggregation

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _event(key, minutes, value="1", **properties):
    return MeterEvent(key, T0 + timedelta(minutes=minutes), Decimal(value), properties)


def _one(aggregation, events, **fields):
    version = MeterVersion(1, aggregation, T0, **fields)
    result = aggregate(Meter([version]), events)
    return {group: acc.result(version) for (_, group), acc in result.items()}


def test_an_event_exactly_at_effective_from_goes_to_the_new_version():
    v1 = MeterVersion(1, Aggregation.SUM, T0, effective_to=T0 + timedelta(hours=1))
    v2 = MeterVersion(2, Aggregation.SUM, T0 + timedelta(hours=1))
    meter = Meter([v2, v1])
    assert meter.version_at(T0 + timedelta(minutes=59, seconds=59)) is v1
    assert meter.version_at(T0 + timedelta(hours=1)) is v2
    assert meter.version_at(T0 - timedelta(microseconds=1)) is None
    result = aggregate(meter, [_event("a", 59, "2"), _event("b", 60, "3"), _event("c", -1, "100")])
    assert {key[0]: acc.total for key, acc in result.items()} == {1: Decimal(2), 2: Decimal(3)}


@pytest.mark.parametrize(
    ("aggregation", "expected", "fields"),
    [
        (Aggregation.SUM, Decimal("10.6"), {}),  # 1.5 + 2 + 7.1
        (Aggregation.COUNT, Decimal(3), {}),
        (Aggregation.MAX, Decimal("7.1"), {}),
        (Aggregation.MIN, Decimal("1.5"), {}),
        (Aggregation.LAST, Decimal(2), {}),  # latest timestamp (minute 5)
        (Aggregation.UNIQUE_COUNT, Decimal(2), {"unique_property": "patient"}),
        (
            Aggregation.PERCENTILE,
            Decimal(2),
            {"percentile": Decimal(50)},
        ),  # ceil(0.5*3)=2nd of 1.5,2,7.1
    ],
)
def test_each_aggregation_in_exact_decimal(aggregation, expected, fields):
    events = [
        _event("a", 1, "1.5", patient="p1"),
        _event("b", 5, "2", patient="p2"),
        _event("c", 3, "7.1", patient="p1"),
    ]
    assert _one(aggregation, events, **fields) == {(): expected}


def test_last_breaks_timestamp_ties_by_the_greatest_idempotency_key():
    tie = [_event("k-b", 1, "5"), _event("k-a", 1, "9")]
    assert _one(Aggregation.LAST, tie) == {(): Decimal(5)}
    assert _one(Aggregation.LAST, list(reversed(tie))) == {(): Decimal(5)}


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [
        (["1", "2", "3", "4"], "25", "1"),
        (["1", "2", "3", "4"], "26", "2"),
        (["1", "2", "3", "4"], "100", "4"),
        (["5"], "0.1", "5"),
        ([], "50", "0"),
    ],
)
def test_percentile_is_nearest_rank(values, percentile, expected):
    assert nearest_rank([Decimal(v) for v in values], Decimal(percentile)) == Decimal(expected)


def test_filters_keep_matching_events_and_group_by_splits_them():
    events = [
        _event("a", 1, "1", region="eu-west-1", tier="gpu"),
        _event("b", 2, "2", region="us-east-1", tier="cpu"),
        _event("c", 3, "4", region="ap-south-1", tier="gpu"),
        _event("d", 4, "8", region="eu-west-1"),
    ]
    result = _one(
        Aggregation.SUM, events, filters={"region": ["eu-west-1", "us-east-1"]}, group_by=("tier",)
    )
    assert result == {("gpu",): Decimal(1), ("cpu",): Decimal(2), (None,): Decimal(8)}


def test_no_events_is_zero_for_every_aggregation():
    for aggregation in Aggregation:
        fields = {"unique_property": "x"} if aggregation == Aggregation.UNIQUE_COUNT else {}
        if aggregation == Aggregation.PERCENTILE:
            fields = {"percentile": Decimal(90)}
        version = MeterVersion(1, aggregation, T0, **fields)
        assert Accumulator().result(version) == Decimal(0)


def test_property_text_forms():
    assert [property_text(v) for v in ("eu", 3, Decimal("1.50"), True, None, {"a": 1})] == [
        "eu",
        "3",
        "1.5",
        "true",
        None,
        None,
    ]


# -- merging partial aggregates equals one pass (what real-time rollups rely on) ---------

events_strategy = st.lists(
    st.builds(
        lambda key, minute, cents, region, patient: _event(
            f"k{key}", minute, str(Decimal(cents) / 100), region=region, patient=patient
        ),
        st.integers(0, 40),
        st.integers(-10, 200),
        st.integers(-10_000, 10_000),
        st.sampled_from(["eu", "us", "ap"]),
        st.sampled_from(["p1", "p2", "p3", "p4"]),
    ),
    max_size=60,
    # Ingestion stores one event per idempotency key: two events with one key and one
    # instant would leave `last`/`first` without an order to pick by.
    unique_by=lambda event: event.idempotency_key,
)


@settings(max_examples=150, deadline=None)
@given(
    events_strategy,
    st.lists(st.integers(0, 60), max_size=5),
    st.sampled_from(list(Aggregation)),
    st.randoms(use_true_random=False),
)
def test_partial_aggregates_merged_in_any_order_equal_one_pass(events, cuts, aggregation, rng):
    fields = {"unique_property": "patient"} if aggregation == Aggregation.UNIQUE_COUNT else {}
    if aggregation == Aggregation.PERCENTILE:
        fields = {"percentile": Decimal(90)}
    versions = [
        MeterVersion(
            1,
            aggregation,
            T0,
            effective_to=T0 + timedelta(minutes=100),
            filters={"region": ["eu", "us"]},
            group_by=("region",),
            **fields,
        ),
        MeterVersion(2, aggregation, T0 + timedelta(minutes=100), group_by=("region",), **fields),
    ]
    meter = Meter(versions)
    one_pass = aggregate(meter, events)
    shuffled = list(events)
    rng.shuffle(shuffled)
    bounds = sorted({0, len(shuffled), *(min(c, len(shuffled)) for c in cuts)})
    parts = [aggregate(meter, shuffled[a:b]) for a, b in itertools.pairwise(bounds)]
    rng.shuffle(parts)
    merged = merge_all(parts)
    by_version = {v.version: v for v in versions}
    assert {k: a.result(by_version[k[0]]) for k, a in merged.items()} == {
        k: a.result(by_version[k[0]]) for k, a in one_pass.items()
    }


# --- checksum parts and the real-time percentile sketch ---------------------------------


def test_an_event_digest_is_the_sha256_of_its_canonical_line_as_an_integer():
    at = datetime(2026, 6, 1, 2, 0, 0, 5, tzinfo=UTC)
    line = b"key-1\t2026-06-01T02:00:00.000005Z\t1.5\n"
    expected = int.from_bytes(hashlib.sha256(line).digest(), "big")
    assert event_digest("key-1", at, Decimal("1.50")) == expected


def test_the_checksum_is_order_independent_and_names_versions_and_counts():
    events = [
        (
            MeterEvent(f"k{n}", datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=n), Decimal(n)),
            1 + n % 2,
        )
        for n in range(6)
    ]
    checksum = events_checksum(events)
    assert events_checksum(list(reversed(events))) == checksum
    sums = {1: 0, 2: 0}
    for event, version in events:
        sums[version] += event_digest(event.idempotency_key, event.timestamp, event.value)
    lines = f"1\t3\t{sums[1] % 2**256:064x}\n2\t3\t{sums[2] % 2**256:064x}\n"
    assert checksum == hashlib.sha256(lines.encode()).hexdigest()
    # The same events counted under another version is another checksum.
    assert events_checksum([(e, 1) for e, _ in events]) != checksum
    assert events_checksum(events[:-1]) != checksum
    assert usage_checksum({}) == hashlib.sha256(b"").hexdigest()


@settings(max_examples=300)
@given(
    values=st.lists(
        st.decimals(-(10**9), 10**9, places=10, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=60,
    ),
    percentile=st.decimals(1, 100, places=2),
)
def test_the_sketch_percentile_is_within_its_stated_bound(values, percentile):
    bins: dict[tuple[int, int], int] = {}
    for value in values:
        key = sketch_bin(value)
        bins[key] = bins.get(key, 0) + 1
    exact = nearest_rank(values, percentile)
    approximate = sketch_percentile(bins, percentile)
    assert abs(approximate - exact) <= SKETCH_RELATIVE_ERROR * abs(exact) + Decimal("1e-10")


def test_sketch_bins_order_negative_zero_positive():
    bins = {sketch_bin(Decimal(v)): 1 for v in ("-100", "-1", "0", "1", "100")}
    ranks = [sketch_percentile(bins, Decimal(p)) for p in (20, 40, 60, 80, 100)]
    assert ranks == sorted(ranks) and ranks[2] == 0 and ranks[0] < -99 and ranks[4] > 99
