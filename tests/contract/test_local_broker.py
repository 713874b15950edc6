"""The local broker: routes by the Trigger manifests, delivers over real HTTP, retries and
gives up exactly as Knative's broker does."""

import base64
from datetime import UTC, datetime

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.config import settings
from core.services.cloudevents import handled_events
from functions.broker import LocalBroker
from functions.devserver import DevServer
from functions.topology import load_topology
from tests.contract.http_servers import Recorder, serve, serve_asgi
from tests.fixtures.samples import create_metric


def _jobs():
    with get_database().transaction() as connection:
        return connection.execute(
            text(
                "SELECT payload->>'trigger' AS trigger, status, attempts, last_error "
                "FROM jobs WHERE queue = 'broker' ORDER BY id"
            )
        ).all()


def _drain(broker):
    for _ in range(20):
        if broker.run_deliveries_once() == 0:
            return


@pytest.fixture
def dev_server(db):
    holder = {}
    with serve_asgi(lambda *call: holder["server"](*call)) as base_url:  # noqa: PLW0108 - late-bound
        holder["server"] = DevServer(base_url=base_url, knative_dir=settings().abaxus_knative_dir)
        yield base_url, holder["server"]


@pytest.mark.parametrize("mode", [to_binary, to_structured], ids=["binary", "structured"])
def test_an_event_reaches_only_the_functions_whose_trigger_matches(dev_server, mode):
    base_url, server = dev_server
    event = CloudEvent(
        {
            "type": "dev.abaxus.aggregate.tick.v1",
            "source": "/ops",
            "id": "manual-1",
            "datacontenttype": "application/json",
        },
        {},
    )
    headers, body = mode(event)
    response = requests.post(base_url + "/_broker", headers=headers, data=body, timeout=10)
    assert response.status_code == 202 and response.content == b""
    _drain(server.broker)
    assert [(j.trigger, j.status) for j in _jobs()] == [("aggregate-manual-tick", "done")]
    # the aggregate tick ran (the delivery is done); ticks keep no inbox row
    assert handled_events("aggregate") == handled_events("invoice") == []


def test_a_ping_source_tick_is_routed_by_its_source_to_its_functions(dev_server):
    _, server = dev_server
    (billing,) = [p for p in server.topology.pings if p.name == "abaxus-billing-tick"]
    server.broker.fire(billing, datetime(2026, 3, 1, 13, 0, tzinfo=UTC))
    server.broker.fire(billing, datetime(2026, 3, 1, 13, 0, tzinfo=UTC))  # a second worker's tick
    _drain(server.broker)
    assert sorted((j.trigger, j.status) for j in _jobs()) == [
        ("charge-billing-tick", "done"),
        ("invoice-billing-tick", "done"),
    ]
    tick = (billing.source, "abaxus-billing-tick-20260301T1300Z", "dev.knative.sources.ping")
    # charge records the tick in its inbox (the second delivery was a no-op); the invoice
    # tick is idempotent by construction and runs on every delivery, without an inbox row.
    assert handled_events("charge") == [tick]
    assert handled_events("invoice") == handled_events("aggregate") == []


def test_ping_sources_fire_on_schedule_and_all_once_when_the_broker_starts(dev_server):
    _, server = dev_server
    assert server.broker.fire_due(datetime(2026, 3, 1, 13, 5, tzinfo=UTC)) == [
        "abaxus-aggregate-tick"
    ]
    assert sorted(server.broker.fire_due(datetime(2026, 3, 1, 14, 0, tzinfo=UTC))) == [
        "abaxus-aggregate-tick",
        "abaxus-billing-tick",
    ]
    started = datetime(2026, 3, 1, 14, 7, tzinfo=UTC)  # not a billing minute: catch-up fires it
    assert sorted(server.broker.fire_due(started, catch_up=True)) == [
        "abaxus-aggregate-tick",
        "abaxus-billing-tick",
    ]
    _drain(server.broker)
    fired = [event_id for _, event_id, _ in handled_events("charge")]
    assert fired == ["abaxus-billing-tick-20260301T1400Z", "abaxus-billing-tick-20260301T1407Z"]


def test_an_event_nobody_subscribes_to_is_accepted_and_delivered_nowhere(dev_server):
    base_url, _ = dev_server
    headers, body = to_binary(CloudEvent({"type": "dev.abaxus.nobody.v1", "source": "/x"}, {}))
    assert requests.post(base_url + "/", headers=headers, data=body, timeout=10).status_code == 202
    assert _jobs() == []


def test_the_broker_refuses_what_is_not_a_cloudevent(dev_server):
    base_url, _ = dev_server
    response = requests.post(base_url + "/_broker", json={"x": 1}, timeout=10)
    assert response.status_code == 400 and response.json()["code"] == "invalid_cloudevent"


@pytest.fixture
def scripted(db):
    recorder = Recorder()
    with serve(recorder) as url:
        broker = LocalBroker(
            load_topology(settings().abaxus_knative_dir), lambda function: url + "/"
        )
        yield broker, recorder


def _publish_tick(broker):
    headers, body = to_binary(
        CloudEvent({"type": "dev.abaxus.aggregate.tick.v1", "source": "/t", "id": "e1"}, {})
    )
    assert broker.publish(headers, body) == 1


def test_a_5xx_answer_is_retried_per_the_trigger_delivery_spec(scripted):
    broker, recorder = scripted
    recorder.answers = [(500, {}, b"")]
    _publish_tick(broker)
    broker.run_deliveries_once()
    (job,) = _jobs()
    assert (job.status, job.attempts) == ("pending", 1)
    assert "answered 500" in job.last_error
    with get_database().transaction() as connection:
        delay = connection.execute(text("SELECT run_after - updated_at FROM jobs")).scalar()
    # aggregate-manual-tick inherits the Broker's PT0.5S exponential: first retry after 1 s
    assert delay.total_seconds() == pytest.approx(1.0)
    assert len(recorder.received) == 1


def test_a_400_answer_is_final_and_never_retried(scripted):
    broker, recorder = scripted
    recorder.answers = [(400, {}, b"bad event")]
    _publish_tick(broker)
    broker.run_deliveries_once()
    (job,) = _jobs()
    assert (job.status, job.attempts) == ("dead", 1)
    assert "answered 400" in job.last_error


def test_a_non_empty_2xx_that_is_not_a_cloudevent_is_a_failed_delivery(scripted):
    broker, recorder = scripted
    recorder.answers = [
        (200, {"Content-Type": "text/html"}, b"OK")
    ]  # functions-framework's default
    _publish_tick(broker)
    broker.run_deliveries_once()
    (job,) = _jobs()
    assert (job.status, job.attempts) == ("pending", 1)


def test_a_cloudevent_reply_is_published_back_to_the_broker(scripted):
    broker, recorder = scripted
    reply_headers, reply_body = to_binary(
        CloudEvent(
            {
                "type": "dev.abaxus.billing.tick.v1",
                "source": "/reply",
                "id": "r1",
                "datacontenttype": "application/json",
            },
            {},
        )
    )
    recorder.answers = [(200, reply_headers, reply_body)]
    _publish_tick(broker)
    broker.run_deliveries_once()
    assert [(j.trigger, j.status) for j in _jobs()] == [
        ("aggregate-manual-tick", "done"),
        ("invoice-manual-billing-tick", "pending"),
    ]


def test_an_undeliverable_event_ends_dead_and_kept_after_its_retries(scripted):
    broker, recorder = scripted
    recorder.answers = [(503, {}, b"")] * 10
    _publish_tick(broker)
    with get_database().transaction() as connection:
        max_attempts = connection.execute(text("SELECT max_attempts FROM jobs")).scalar()
    for _ in range(max_attempts):
        with get_database().transaction() as connection:
            connection.execute(text("UPDATE jobs SET run_after = now()"))
        broker.run_deliveries_once()
    (job,) = _jobs()
    assert (job.status, job.attempts) == ("dead", 6)  # Broker retry: 5 -> 6 attempts
    assert len(recorder.received) == 7  # 6 attempts, then the dead-letter sink
    headers, body = recorder.received[-1]
    assert (headers["Ce-Knativeerrorcode"], headers["Ce-Id"], body) == (
        "503",
        "e1",
        recorder.received[0][1],
    )


def test_a_final_4xx_is_dead_lettered_at_once_with_why(scripted):
    broker, recorder = scripted
    recorder.answers = [(400, {}, b"bad event")]
    _publish_tick(broker)
    broker.run_deliveries_once()
    assert len(recorder.received) == 2
    headers, _ = recorder.received[1]
    assert headers["Ce-Knativeerrorcode"] == "400"
    assert base64.b64decode(headers["Ce-Knativeerrordata"]) == b"bad event"


def test_refused_usage_is_dead_lettered_kept_and_listed(dev_server, db):
    base_url, server = dev_server
    from core.services import api_keys
    from core.services.caller import SYSTEM

    create_metric("api_calls")
    usage = CloudEvent(
        {
            "type": "dev.abaxus.usage.reported.v1",
            "source": "/svc/gw",
            "id": "bad-1",
            "datacontenttype": "application/json",
        },
        {
            "customer_id": "c1",
            "metric_key": "api_calls",
            "value": "NaN",
            "timestamp": "2026-01-01T00:00:00Z",
        },
    )
    headers, body = to_structured(usage)
    assert (
        requests.post(base_url + "/_broker", headers=headers, data=body, timeout=10).status_code
        == 202
    )
    _drain(server.broker)
    assert [(j.trigger, j.status) for j in _jobs()] == [("ingest-usage-reported", "dead")]
    reader = api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret
    listed = requests.get(
        base_url + "/v1/dead-letters", headers={"Authorization": f"Bearer {reader}"}, timeout=10
    ).json()["data"]
    assert [(d["ce_id"], d["ce_type"], d["error_code"]) for d in listed] == [
        ("bad-1", "dev.abaxus.usage.reported.v1", "422")
    ]
    assert base64.b64decode(listed[0]["body_base64"]) == body  # kept byte for byte
    assert "invalid_value" in base64.b64decode(listed[0]["error_data"]).decode()
