"""Real-time usage from rollups: once the aggregator has caught up it equals the exact scan,
for every aggregation, whatever the duplicates, arrival order, batching and interleaving
of aggregator runs; each event is folded once with parallel aggregators and redelivered
notifications; new meter versions rebuild what they change."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from core.adapters import queue
from core.adapters.postgres.database import get_database
from core.domain.metrics import MetricVersionDefinition
from core.services import aggregation as aggregator
from core.services import ingest, usage
from core.services.caller import SYSTEM
from core.services.catalog import metrics
from tests.conftest import truncate_all
from tests.fixtures.samples import create_metric
from tests.integration.test_usage_summary import MAIN

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=2)
BOUND = Decimal("0.01")

AGGREGATIONS = {
    "sum": {},
    "count": {},
    "max": {},
    "min": {},
    "last": {},
    "unique_count": {"unique_property": "patient"},
    "percentile": {"percentile": "90"},
}


def _event(n, minute, value, *, customer="cust_a", region="eu", patient="p1", key=None):
    return {
        "customer_id": customer,
        "metric_key": "usage",
        "value": str(value),
        "timestamp": (T0 + timedelta(minutes=minute)).isoformat(),
        "idempotency_key": key or f"k{n}",
        "properties": {"region": region, "patient": patient},
    }


def _setup_metric(aggregation, *, switch_minute=None, second_group_by=("region",)):
    create_metric("usage", aggregation=aggregation, **AGGREGATIONS[aggregation])
    if switch_minute is not None:
        metrics.add_version(
            SYSTEM,
            "usage",
            MetricVersionDefinition.model_validate(
                {
                    "name": "usage",
                    "aggregation": aggregation,
                    "group_by": list(second_group_by),
                    "effective_from": (T0 + timedelta(minutes=switch_minute)).isoformat(),
                    **AGGREGATIONS[aggregation],
                }
            ),
        )


def _both(start, end, customer="cust_a"):
    common = {"customer_id": customer, "metric_key": "usage", "start": start, "end": end}
    return usage.summary(mode="realtime", **common), usage.summary(mode="exact", **common)


def _assert_agree(realtime, exact):
    assert realtime["event_count"] == exact["event_count"]
    assert realtime["meter_versions"] == exact["meter_versions"]
    assert realtime["consistency"] == "eventual" and realtime["checksum"] is None
    pairs = [(realtime["value"], exact["value"])] + [
        (r["value"], e["value"]) for r, e in zip(realtime["groups"], exact["groups"], strict=True)
    ]
    assert [(g["meter_version"], g["group"], g["event_count"]) for g in realtime["groups"]] == [
        (g["meter_version"], g["group"], g["event_count"]) for g in exact["groups"]
    ]
    for mine, theirs in pairs:
        if realtime["approximate"]:
            assert abs(mine - theirs) <= BOUND * abs(theirs) + Decimal("1e-10"), (mine, theirs)
        else:
            assert mine == theirs


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 299),  # minute: five hours from T0
        st.decimals(-50, 5000, places=3, allow_nan=False, allow_infinity=False),
        st.sampled_from(["eu", "us"]),
        st.sampled_from(["p1", "p2", "p3", "p4"]),
        st.sampled_from(["cust_a", "cust_b"]),
    ),
    min_size=1,
    max_size=40,
)


@pytest.mark.parametrize("aggregation", list(AGGREGATIONS))
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=events_strategy,
    data=st.data(),
)
def test_realtime_equals_exact_once_caught_up(database_url, aggregation, raw, data):
    truncate_all(database_url)
    switch = data.draw(st.one_of(st.none(), st.integers(1, 299)), label="version switch minute")
    _setup_metric(aggregation, switch_minute=switch)
    events = [
        _event(n, *fields[:2], region=fields[2], patient=fields[3], customer=fields[4])
        for n, fields in enumerate(raw)
    ]
    # Retries: some events are sent again (duplicates), and arrival order is shuffled.
    resent = data.draw(st.lists(st.sampled_from(events), max_size=10), label="resent")
    arrivals = data.draw(st.permutations(events + resent), label="arrival order")
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arrivals) - 1)), max_size=5)))
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    for batch in filter(None, batches):
        outcomes = ingest.ingest(batch, now=NOW)
        assert {o.outcome for o in outcomes} <= {"accepted", "duplicate"}
        if data.draw(st.booleans(), label="aggregator runs now"):
            aggregator.drain(batch=data.draw(st.integers(1, 3), label="fold batch"))
    aggregator.drain()
    start_minute = data.draw(st.integers(0, 290), label="from minute")
    end_minute = data.draw(st.integers(start_minute + 1, 300), label="to minute")
    start, end = (T0 + timedelta(minutes=m) for m in (start_minute, end_minute))
    for customer in ("cust_a", "cust_b"):
        _assert_agree(*_both(start, end, customer))
    # Billing periods: whole hours, answered from rollups alone.
    _assert_agree(*_both(T0, T0 + timedelta(hours=5)))


def _ingest_jobs(count, per_job=5):
    for job in range(count):
        batch = [
            _event(f"{job}-{i}", (job * per_job + i) % 290, Decimal(i + 1) / 4)
            for i in range(per_job)
        ]
        assert {o.outcome for o in ingest.ingest(batch, now=NOW)} == {"accepted"}


def _rollup_totals():
    with get_database().transaction() as connection:
        return connection.execute(
            text(
                "SELECT customer_id, metric_key, bucket_start, version, group_values, event_count, "
                "total, digest_sum FROM usage_rollups ORDER BY 1, 2, 3, 4, 5"
            )
        ).all()


def test_two_aggregators_in_parallel_never_fold_an_event_twice(db):
    _setup_metric("sum")
    _ingest_jobs(12)
    inside, release = threading.Event(), threading.Event()
    first: dict[str, queue.WorkResult] = {}

    def slow(claimed):
        inside.set()
        assert release.wait(30)
        aggregator.fold_jobs(claimed)

    def hold_five():
        first["result"] = queue.work_together(
            get_database(), aggregator.AGGREGATE_QUEUE, aggregator.FOLD_JOB, slow, limit=5
        )

    worker = threading.Thread(target=hold_five)
    worker.start()
    assert inside.wait(30)
    # The second aggregator runs while the first holds its five jobs mid-fold.
    second = aggregator.drain(batch=2)
    release.set()
    worker.join(30)
    assert (first["result"].claimed, first["result"].done) == (5, 5)
    assert (second.claimed, second.done) == (7, 7)
    rows = _rollup_totals()
    assert sum(r.event_count for r in rows) == 60
    realtime, exact = _both(T0, T0 + timedelta(hours=5))
    assert realtime["event_count"] == exact["event_count"] == 60
    assert realtime["value"] == exact["value"] == Decimal(12 * (1 + 2 + 3 + 4 + 5)) / 4


def test_redelivered_notifications_and_extra_runs_change_nothing(db):
    from functions_framework import create_app

    _setup_metric("max")
    _ingest_jobs(3)
    client = create_app(target="aggregate", source=MAIN).test_client()
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "dev.abaxus.events.ingested.v1",
        "ce-source": "/ingest",
        "ce-id": "ingest-job-1",
        "Content-Type": "application/json",
    }
    assert client.post("/", headers=headers, json={"job_id": 1}).status_code in {200, 202, 204}
    folded = _rollup_totals()
    assert sum(r.event_count for r in folded) == 15
    # The broker redelivers the same event, another replica gets a second notification,
    # and the tick drains again: nothing is folded twice.
    assert client.post("/", headers=headers, json={"job_id": 1}).status_code in {200, 202, 204}
    other = {**headers, "ce-id": "ingest-job-2"}
    assert client.post("/", headers=other, json={"job_id": 2}).status_code in {200, 202, 204}
    assert aggregator.drain().claimed == 0
    assert _rollup_totals() == folded


def test_a_new_version_rebuilds_the_rollups_it_changes(db):
    _setup_metric("sum")
    events = [_event(n, n * 7, n + 1, region=["eu", "us"][n % 2]) for n in range(40)]
    ingest.ingest(events, now=NOW)
    aggregator.drain()
    before = usage.summary(
        mode="realtime",
        customer_id="cust_a",
        metric_key="usage",
        start=T0,
        end=T0 + timedelta(hours=5),
    )
    assert before["meter_versions"] == [1] and before["value"] == Decimal(sum(range(1, 41)))
    # Version 2 from 10:45 (mid-hour, in the past): groups by region from then on.
    metrics.add_version(
        SYSTEM,
        "usage",
        MetricVersionDefinition.model_validate(
            {
                "name": "usage",
                "aggregation": "sum",
                "group_by": ["region"],
                "effective_from": (T0 + timedelta(minutes=45)).isoformat(),
            }
        ),
    )
    start, end = T0, T0 + timedelta(hours=5)
    pending = usage.parity(customer_id="cust_a", start=start, end=end)
    assert pending["data"][0]["status"] == "catching_up"
    assert pending["data"][0]["refold_pending"] is True
    result = aggregator.drain()
    assert result.done == 1
    realtime, exact = _both(start, end)
    _assert_agree(realtime, exact)
    assert realtime["meter_versions"] == [1, 2] and len(realtime["groups"]) == 3
    assert usage.parity(customer_id="cust_a", start=start, end=end)["agree"] is True


def test_the_watermark_is_the_oldest_unfolded_ingestion(db):
    _setup_metric("count")
    ingest.ingest([_event(1, 5, 1)], now=NOW)
    with get_database().transaction() as connection:
        created = connection.execute(
            text("SELECT created_at FROM jobs WHERE kind = 'fold'")
        ).scalar_one()
    window = {
        "customer_id": "cust_a",
        "metric_key": "usage",
        "start": T0,
        "end": T0 + timedelta(hours=1),
    }
    behind = usage.summary(mode="realtime", **window)
    # Not folded yet: the whole hour comes from rollups and has nothing; as_of says so.
    assert behind["as_of"] == created and behind["value"] == 0
    # A window with a partial hour reads its edge raw: already current.
    edge = usage.summary(mode="realtime", **{**window, "end": T0 + timedelta(minutes=30)})
    assert edge["value"] == 1
    aggregator.drain()
    caught_up = usage.summary(mode="realtime", **window)
    assert caught_up["value"] == 1 and caught_up["as_of"] > created


def test_parity_reports_catching_up_then_agree_then_drift(db, caplog):
    _setup_metric("sum")
    ingest.ingest([_event(n, n, n + 1) for n in range(10)], now=NOW)
    window = {"customer_id": "cust_a", "start": T0, "end": T0 + timedelta(hours=1)}
    behind = usage.parity(**window)
    row = behind["data"][0]
    assert (behind["caught_up"], row["status"], row["pending_event_count"]) == (
        False,
        "catching_up",
        10,
    )
    assert (row["realtime"]["value"], row["exact"]["value"], row["difference"]) == (0, 55, -55)
    aggregator.drain()
    assert usage.parity(**window)["data"][0]["status"] == "agree"
    with get_database().transaction() as connection:
        connection.execute(text("UPDATE usage_rollups SET total = total + 2"))
    drifted = usage.parity(**window)
    assert drifted["agree"] is False and drifted["data"][0]["status"] == "drift"
    assert drifted["data"][0]["difference"] == 2
    # The tick's reconciliation sees it too: a gauge per metric and an ERROR log line.
    from core.observability import REGISTRY

    outcome = usage.reconcile(now=T0 + timedelta(hours=1, minutes=10))
    assert outcome.checked and outcome.customers == 1 and outcome.drift == {"usage": 2}
    assert REGISTRY.get_sample_value("abaxus_usage_parity_drift", {"metric_key": "usage"}) == 2.0
    assert (
        REGISTRY.get_sample_value("abaxus_usage_parity_mismatches", {"metric_key": "usage"}) == 1.0
    )
    assert any("parity drift" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_reconciliation_waits_for_the_watermark(db):
    _setup_metric("sum")
    ingest.ingest([_event(1, 1, 1)], now=NOW)  # not folded
    outcome = usage.reconcile(now=datetime.now(UTC) + timedelta(hours=2))
    assert outcome.checked is False and outcome.as_of is not None and outcome.as_of < outcome.end
