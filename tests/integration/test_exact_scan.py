"""The exact scan in SQL agrees with the pure meter evaluation on the same events: every
aggregation, versions by event time, filters, groups, the total, and the checksum."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.adapters.postgres.database import get_database
from core.adapters.postgres.usage import scan
from core.domain.meters import Meter, MeterEvent, MeterVersion, aggregate, counted, events_checksum
from core.domain.metrics import Aggregation
from core.services import ingest
from tests.fixtures.samples import create_metric

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _events(seed, count=400):
    rng = random.Random(seed)
    return [
        {
            "customer_id": rng.choice(["cust_a", "cust_b"]),
            "metric_key": "usage",
            "value": str(Decimal(rng.randint(-5000, 50000)) / 1000),
            "timestamp": (
                T0
                + timedelta(
                    minutes=rng.randint(0, 60 * 24 * 20), microseconds=rng.choice([0, 250000])
                )
            ).isoformat(),
            "idempotency_key": f"e{seed}-{n}-{rng.choice(['a', 'B', 'é'])}",
            "properties": {
                "region": rng.choice(["eu", "us", "ap"]),
                "patient": rng.choice(["p1", "p2", "p3", 7]),
                "tier": rng.choice(["gpu", "cpu", True]),
            },
        }
        for n in range(count)
    ]


def _metric():
    create_metric("usage")


def _scan(versions, start, end, customer="cust_a"):
    with get_database().transaction() as connection:
        return scan(
            connection,
            customer_id=customer,
            metric_key="usage",
            versions=versions,
            start=start,
            end=end,
        )


@pytest.mark.parametrize("aggregation", list(Aggregation))
def test_sql_exact_scan_equals_the_pure_meter_on_the_same_events(db, aggregation):
    fields = {"unique_property": "patient"} if aggregation == Aggregation.UNIQUE_COUNT else {}
    if aggregation == Aggregation.PERCENTILE:
        fields = {"percentile": Decimal("95")}
    _metric()
    raw = _events(seed=list(Aggregation).index(aggregation))
    assert {o.outcome for o in ingest.ingest(raw, now=T0 + timedelta(days=30))} == {"accepted"}
    switch = T0 + timedelta(days=9)
    versions = [
        MeterVersion(
            1,
            aggregation,
            T0 - timedelta(days=1),
            effective_to=switch,
            filters={"region": ["eu", "us"]},
            group_by=("tier",),
            **fields,
        ),
        MeterVersion(2, aggregation, switch, group_by=("region", "tier"), **fields),
    ]
    start, end = T0 + timedelta(days=2), T0 + timedelta(days=17, hours=5)
    events = [
        MeterEvent(
            e["idempotency_key"],
            datetime.fromisoformat(e["timestamp"]),
            Decimal(e["value"]),
            e["properties"],
        )
        for e in raw
        if e["customer_id"] == "cust_a" and start <= datetime.fromisoformat(e["timestamp"]) < end
    ]
    meter = Meter(versions)
    partial = aggregate(meter, events)
    expected = {(k[0], k[1]): (a.result(versions[k[0] - 1]), a.count) for k, a in partial.items()}
    result = _scan(versions, start, end)
    assert {(g.version, g.group): (g.value, g.event_count) for g in result.groups} == expected
    assert len(expected) > 3
    assert result.checksum == events_checksum(counted(meter, events))
    accumulators = list(partial.values())
    merged = accumulators[0]
    for accumulator in accumulators[1:]:
        merged = merged.merge(accumulator)
    assert (result.total, result.event_count) == (merged.result(versions[-1]), merged.count)


def test_the_checksum_changes_when_an_event_is_added_and_not_otherwise(db):
    _metric()
    raw = _events(seed=42, count=50)
    ingest.ingest(raw, now=T0 + timedelta(days=30))
    versions = [MeterVersion(1, Aggregation.SUM, T0 - timedelta(days=1))]
    first = _scan(versions, T0, T0 + timedelta(days=30)).checksum
    assert _scan(versions, T0, T0 + timedelta(days=30)).checksum == first
    ingest.ingest(
        [{**raw[0], "customer_id": "cust_a", "idempotency_key": "late-one"}],
        now=T0 + timedelta(days=30),
    )
    assert _scan(versions, T0, T0 + timedelta(days=30)).checksum != first


def test_no_events_no_groups_and_the_empty_checksum(db):
    result = _scan(
        [MeterVersion(1, Aggregation.SUM, T0)], T0, T0 + timedelta(days=1), customer="nobody"
    )
    assert (result.groups, result.total, result.event_count) == ([], Decimal(0), 0)
    assert result.checksum == events_checksum([])


def test_versions_that_aggregate_differently_have_no_common_total(db):
    versions = [
        MeterVersion(1, Aggregation.SUM, T0, effective_to=T0 + timedelta(days=1)),
        MeterVersion(2, Aggregation.MAX, T0 + timedelta(days=1)),
    ]
    assert _scan(versions, T0, T0 + timedelta(days=2), customer="nobody").total is None


def test_the_sql_percentile_rank_is_exact_decimal_arithmetic(db):
    """p = 7 of 100 values is rank 7: 0.07 * 100 in floating point is 7.000000000000001,
    whose ceiling would be rank 8 (PostgreSQL's percentile_disc takes a float)."""
    _metric()
    raw = [
        {
            "customer_id": "cust_a",
            "metric_key": "usage",
            "value": n,
            "timestamp": (T0 + timedelta(minutes=n)).isoformat(),
            "idempotency_key": f"p{n}",
        }
        for n in range(1, 101)
    ]
    ingest.ingest(raw, now=T0 + timedelta(days=1))
    versions = [MeterVersion(1, Aggregation.PERCENTILE, T0, percentile=Decimal(7))]
    assert _scan(versions, T0, T0 + timedelta(days=1)).total == 7
