"""A region's status from its heartbeats, and what a window lacks to be complete (API.md
§10; core/domain/regions.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.domain.regions import (
    CATCHING_UP,
    STALLED,
    STREAMING,
    RegionView,
    completeness,
    lag_seconds,
    status_of,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_status_follows_the_newest_heartbeat_and_its_arrival() -> None:
    def status(beat_ago: float | None, arrived_ago: float | None, enabled: bool = True) -> str:
        return status_of(
            complete_until=None if beat_ago is None else NOW - timedelta(seconds=beat_ago),
            last_arrival=None if arrived_ago is None else NOW - timedelta(seconds=arrived_ago),
            now=NOW,
            stall_seconds=30,
            enabled=enabled,
        )

    assert status(2, 1) == STREAMING
    assert status(30, 29) == STREAMING  # the bound is inclusive
    assert status(600, 1) == CATCHING_UP  # a backlog being applied: heartbeats still arrive
    assert status(600, 31) == STALLED
    assert status(None, None) == STALLED  # never heard from
    assert status(1, 1, enabled=False) == STALLED  # its subscription is disabled


def test_lag_is_never_negative_and_to_the_millisecond() -> None:
    assert lag_seconds(NOW - timedelta(seconds=1.23456), NOW) == 1.235
    assert lag_seconds(NOW + timedelta(seconds=1), NOW) == 0.0
    assert lag_seconds(None, NOW) is None


def test_a_window_is_complete_when_over_and_every_region_has_reached_its_end() -> None:
    end = NOW - timedelta(minutes=5)
    both = [RegionView("eu-west-1", NOW - timedelta(seconds=2)), RegionView("us-east-1", NOW)]
    found = completeness(end, NOW, both)
    assert (found.complete, found.complete_until, found.lacking) == (True, end, ())

    lagging = [RegionView("eu-west-1", end - timedelta(seconds=1)), RegionView("us-east-1", NOW)]
    found = completeness(end, NOW, lagging)
    assert found.complete is False and found.lacking == ("eu-west-1",)
    assert found.complete_until == end - timedelta(seconds=1)

    silent = [RegionView("eu-west-1", None), RegionView("us-east-1", NOW)]
    found = completeness(end, NOW, silent)
    assert (found.complete, found.complete_until, found.lacking) == (False, None, ("eu-west-1",))

    # a window still open is never complete, whatever the regions say
    found = completeness(NOW + timedelta(hours=1), NOW, both)
    assert found.complete is False and found.lacking == ("eu-west-1", "us-east-1")


def test_one_database_is_complete_up_to_now() -> None:
    past = completeness(NOW - timedelta(hours=1), NOW, [])
    assert (past.complete, past.complete_until, past.lacking) == (
        True,
        NOW - timedelta(hours=1),
        (),
    )
    open_window = completeness(NOW + timedelta(hours=1), NOW, [])
    assert (open_window.complete, open_window.complete_until) == (False, NOW)
