"""Regions (API.md §10), the pure part: a region's status from its newest heartbeat, and
what a period lacks to be complete.

A region's heartbeat says "every event received before `beat_at` is committed"; it
replicates in commit order with the events, so the newest heartbeat a central holds is
the region's `complete_until` there: every event the region received before that instant
is at the central. A period [start, end) is complete at the central when every attached
region's `complete_until` has reached `end` (events received later are late usage, as in
one region)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

STREAMING, CATCHING_UP, STALLED = "streaming", "catching_up", "stalled"


def status_of(
    *,
    complete_until: datetime | None,
    last_arrival: datetime | None,
    now: datetime,
    stall_seconds: int,
    enabled: bool = True,
) -> str:
    """`streaming` while the newest heartbeat is at most `stall_seconds` old; `catching_up`
    when it is older but heartbeats still arrive (a backlog being applied); `stalled` when
    none arrived for `stall_seconds` (the region, its database or the subscription is
    down), or the subscription is disabled."""
    if not enabled:
        return STALLED
    if complete_until is not None and (now - complete_until).total_seconds() <= stall_seconds:
        return STREAMING
    if last_arrival is not None and (now - last_arrival).total_seconds() <= stall_seconds:
        return CATCHING_UP
    return STALLED


def lag_seconds(complete_until: datetime | None, now: datetime) -> float | None:
    """How far behind now the central's view of a region is (never negative), to the ms:
    a duration, not a quantity or an amount."""
    if complete_until is None:
        return None
    return round(max((now - complete_until).total_seconds(), 0.0), 3)


@dataclass(frozen=True)
class RegionView:
    region: str
    complete_until: datetime | None


@dataclass(frozen=True)
class Completeness:
    """Whether everything up to `until` is known here: the regions that lack it, and the
    instant up to which every region is complete (None: some region never reported)."""

    complete: bool
    complete_until: datetime | None
    lacking: tuple[str, ...]

    def view(self) -> dict[str, object]:
        return {
            "complete": self.complete,
            "complete_until": self.complete_until,
            "regions_lacking": list(self.lacking),
        }


def completeness(until: datetime, now: datetime, regions: Sequence[RegionView]) -> Completeness:
    """A window ending at `until` is complete when it is over (`until` <= now) and every
    region's complete_until has reached it. `complete_until` is how far the window is
    known: its end when complete, else the least of the regions' (and of now). Without
    regions (one database), the database itself is complete up to now."""
    if not regions:
        return Completeness(until <= now, min(until, now), ())
    lacking = tuple(
        sorted(r.region for r in regions if r.complete_until is None or r.complete_until < until)
    )
    reached = [r.complete_until for r in regions]
    if any(c is None for c in reached):
        return Completeness(False, None, lacking)
    known = min([until, now, *(c for c in reached if c is not None)])
    return Completeness(until <= now and not lacking, known, lacking)


class NewRegion(BaseModel):
    """POST /v1/regions: a region this central subscribes to."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = Field(
        description="the region's name, as its deployment's ABAXUS_REGION"
    )
    connection: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="a libpq connection string to the region's database (a role with "
        "REPLICATION, e.g. `host=pg.eu-west-1 dbname=abaxus user=replicator`)"
    )
