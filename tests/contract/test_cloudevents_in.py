"""CloudEvents delivered straight to a function target (as a Knative Trigger does)."""

import json

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from functions_framework import create_app

from core.domain import errors
from core.services.cloudevents import handled_events
from tests.conftest import PROJECT_ROOT

MAIN = str(PROJECT_ROOT / "functions" / "main.py")


@pytest.fixture
def aggregate(db):
    return create_app(target="aggregate", source=MAIN).test_client()


def _tick(event_id="tick-1"):
    """An `events.ingested` notification: a handler that records its (source, id) in the
    inbox with its effects (the ticks are idempotent by construction and keep no row)."""
    return CloudEvent(
        {
            "type": "dev.abaxus.events.ingested.v1",
            "source": "/tests",
            "id": event_id,
            "datacontenttype": "application/json",
        },
        {"job_id": 1},
    )


@pytest.mark.parametrize("mode", [to_binary, to_structured], ids=["binary", "structured"])
def test_a_handled_event_is_acknowledged_202_with_an_empty_body(aggregate, mode):
    headers, body = mode(_tick())
    response = aggregate.post("/", headers=headers, data=body)
    assert response.status_code == 202
    assert response.get_data() == b""
    assert handled_events("aggregate") == [("/tests", "tick-1", "dev.abaxus.events.ingested.v1")]


def test_a_redelivered_event_is_acknowledged_and_handled_once(aggregate):
    headers, body = to_binary(_tick("tick-7"))
    statuses = [aggregate.post("/", headers=headers, data=body).status_code for _ in range(3)]
    assert statuses == [202, 202, 202]
    assert len(handled_events("aggregate")) == 1


def test_something_that_is_not_a_cloudevent_is_400(aggregate):
    response = aggregate.post("/", json={"hello": "world"})
    assert response.status_code == 400
    assert response.get_json(force=True)["code"] == "invalid_cloudevent"


def test_an_event_type_the_function_does_not_handle_is_422_never_retried(aggregate):
    headers, body = to_binary(CloudEvent({"type": "dev.abaxus.unknown.v1", "source": "/t"}, {}))
    response = aggregate.post("/", headers=headers, data=body)
    assert response.status_code == 422
    assert response.get_json(force=True)["code"] == "unsupported_event_type"
    assert handled_events("aggregate") == []


def test_a_handler_that_fails_answers_5xx_so_the_broker_keeps_the_event(db, monkeypatch):
    from core.services import jobs

    def down(*args, **kwargs):
        raise errors.Unavailable("the database is unavailable; retry", code="database_unavailable")

    charge = create_app(target="charge", source=MAIN).test_client()
    tick = CloudEvent({"type": "dev.abaxus.billing.tick.v1", "source": "/svc", "id": "t1"}, {})
    headers, body = to_binary(tick)
    monkeypatch.setattr(jobs, "drain", down)
    response = charge.post("/", headers=headers, data=body)
    assert response.status_code == 503
    assert handled_events("charge") == []  # not recorded: a redelivery will be tried again
    monkeypatch.undo()
    assert charge.post("/", headers=headers, data=body).status_code == 202
    assert handled_events("charge") == [("/svc", "t1", "dev.abaxus.billing.tick.v1")]


def test_a_failing_handler_without_inbox_answers_5xx_and_runs_again_on_redelivery(db, monkeypatch):
    from core.services.invoicing import cycles

    calls = []

    def down(*args, **kwargs):
        calls.append(1)
        raise errors.Unavailable("the database is unavailable; retry", code="database_unavailable")

    invoice = create_app(target="invoice", source=MAIN).test_client()
    tick = CloudEvent({"type": "dev.abaxus.billing.tick.v1", "source": "/svc", "id": "t1"}, {})
    headers, body = to_binary(tick)
    monkeypatch.setattr(cycles, "request_due_invoices", down)
    assert invoice.post("/", headers=headers, data=body).status_code == 503
    assert invoice.post("/", headers=headers, data=body).status_code == 503
    assert len(calls) == 2  # the billing tick is idempotent: every delivery runs it
    monkeypatch.undo()
    assert invoice.post("/", headers=headers, data=body).status_code == 202
    assert handled_events("invoice") == []


def test_json_event_data_keeps_decimals_exact():
    from functions.http import decode_event_data

    headers = {"ce-specversion": "1.0", "content-type": "application/json"}
    assert decode_event_data(headers, b'{"value": 0.1000000001}') == {
        "value": __import__("decimal").Decimal("0.1000000001")
    }
    structured = (
        json.dumps({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}).encode()[:-1]
        + b', "data": {"v": 1.5}}'
    )
    assert decode_event_data({"content-type": "application/cloudevents+json"}, structured) == {
        "v": __import__("decimal").Decimal("1.5")
    }
