"""Regions as a central shows them (API.md §10)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.domain.responses.common import InstantText, ResponseModel


class Region(ResponseModel):
    region: str
    status: Literal["streaming", "catching_up", "stalled", "detached"] = Field(
        description="streaming: its newest heartbeat is at most ABAXUS_REGION_STALL_SECONDS "
        "old; catching_up: older, but heartbeats still arrive; stalled: none arrived for "
        "that long (or its subscription is disabled)"
    )
    complete_until: InstantText | None = Field(
        description="every event the region received before this instant is here (its "
        "newest heartbeat received; null before the first)"
    )
    lag_seconds: float | None = Field(description="now minus complete_until")
    events: int = Field(description="events of the region folded here")
    attached: bool


class Regions(ResponseModel):
    data: list[Region]


class CountedCopy(ResponseModel):
    region: str
    event_id: str


class RegionDuplicate(ResponseModel):
    """A copy of an event accepted in more than one region that is not counted."""

    region: str
    event_id: str
    idempotency_key: str
    customer_id: str
    metric_key: str
    timestamp: InstantText
    received_at: InstantText
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the event's content")
    counted: CountedCopy = Field(
        description="the copy that counts: the earliest received, then the smallest region "
        "name, then the smallest event id"
    )
    recorded_at: InstantText
