"""The notification sender: coalescible notes in a burst become two sends, not hundreds."""

import threading
import time

import pytest

from core.config import reload_settings
from core.services import notify


class RecordingBus:
    sink = "http://recorder.invalid"

    def __init__(self):
        self.sent = []
        self.lock = threading.Lock()

    def emit(self, type_, data, *, subject=None, event_id=None):
        with self.lock:
            self.sent.append((type_, data, event_id))
        return True


@pytest.fixture
def short_linger(monkeypatch):
    monkeypatch.setenv("ABAXUS_NOTIFY_LINGER_SECONDS", "0.1")
    reload_settings()
    yield
    monkeypatch.undo()
    reload_settings()


def test_a_burst_of_coalescible_notes_is_sent_as_the_first_and_the_newest(
    monkeypatch, short_linger
):
    bus = RecordingBus()
    monkeypatch.setattr(notify, "_bus", bus)
    for n in range(300):
        notify.emit_later("dev.abaxus.events.ingested.v1", {"job_id": n}, coalesce=True)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        not bus.sent or bus.sent[-1][1] != {"job_id": 299} or not notify._pending.empty()
    ):
        time.sleep(0.01)
    time.sleep(0.2)  # two lingers: anything still coming would have come
    sent = [data["job_id"] for _, data, _ in bus.sent]
    assert sent[-1] == 299  # the newest always goes out: nothing is left unannounced
    assert 1 <= len(sent) <= 3, sent  # the rest were coalesced while the sender lingered
    assert sent == sorted(sent)


def test_plain_notes_are_each_sent(monkeypatch):
    bus = RecordingBus()
    monkeypatch.setattr(notify, "_bus", bus)
    for n in range(20):
        notify.emit_later("dev.abaxus.example.v1", {"n": n}, event_id=f"e{n}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(bus.sent) < 20:
        time.sleep(0.01)
    assert [event_id for _, _, event_id in bus.sent] == [f"e{n}" for n in range(20)]
