"""CloudEvents out: binary mode to K_SINK, bounded retries, no K_SINK means skip."""

import json

from core.adapters.bus import Bus
from tests.contract.http_servers import Recorder, serve


def test_an_event_is_posted_in_binary_mode_with_its_attributes():
    recorder = Recorder()
    with serve(recorder) as url:
        bus = Bus(url, source="/abaxus/ingest", overrides={"extensions": {"tenant": "acme"}})
        assert bus.emit(
            "dev.abaxus.events.ingested.v1", {"job": 7}, subject="cust_1", event_id="ing-7"
        )
    ((headers, body),) = recorder.received
    assert headers["Ce-Type"] == "dev.abaxus.events.ingested.v1"
    assert headers["Ce-Source"] == "/abaxus/ingest"
    assert headers["Ce-Id"] == "ing-7"
    assert headers["Ce-Subject"] == "cust_1"
    assert headers["Ce-Tenant"] == "acme"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"job": 7}


def test_a_5xx_is_retried_until_accepted():
    recorder = Recorder(answers=[(503, {}, b""), (500, {}, b""), (202, {}, b"")])
    with serve(recorder) as url:
        assert Bus(url, source="/t", wait_multiplier_seconds=0.01).emit("t", {})
    assert len(recorder.received) == 3


def test_retries_are_bounded_and_a_failure_is_reported_not_raised():
    recorder = Recorder(answers=[(503, {}, b"")] * 10)
    with serve(recorder) as url:
        assert not Bus(url, source="/t", attempts=3, wait_multiplier_seconds=0.01).emit("t", {})
    assert len(recorder.received) == 3


def test_a_400_is_final():
    recorder = Recorder(answers=[(400, {}, b"")] * 3)
    with serve(recorder) as url:
        assert not Bus(url, source="/t", wait_multiplier_seconds=0.01).emit("t", {})
    assert len(recorder.received) == 1


def test_without_k_sink_the_event_is_skipped():
    assert not Bus(None, source="/t").emit("t", {})
