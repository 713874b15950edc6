"""Usage as the API shows it: raw events, summaries (real-time or exact) and their parity."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.domain.responses.common import (
    Checksum,
    DecimalText,
    InstantText,
    Period,
    ResponseModel,
)


class StoredEvent(ResponseModel):
    """A raw event as stored: properties as their canonical JSON, `received_at` and the
    ingesting region."""

    id: str
    customer_id: str
    metric_key: str
    value: DecimalText
    timestamp: InstantText
    properties: dict[str, Any]
    idempotency_key: str
    received_at: InstantText
    region: str
    superseded_by: str | None = Field(
        description="the correction that supersedes it (listed with include=superseded); "
        "null: it counts"
    )


class Violation(ResponseModel):
    pointer: str = Field(description="RFC 6901, within the event: /value, /properties/region")
    rule: str = Field(description="the rule broken: required, enum, pattern, type, minimum, …")
    message: str


class QuarantinedEvent(ResponseModel):
    """An event held, uncounted, because it broke its metric's quarantining contract."""

    id: str
    customer_id: str
    metric_key: str
    value: DecimalText
    timestamp: InstantText
    properties: dict[str, Any]
    idempotency_key: str
    producer: str | None = Field(description="the API key name or CloudEvent source")
    metric_version: int = Field(description="the version whose contract it was last checked on")
    violations: list[Violation]
    received_at: InstantText
    checked_at: InstantText
    released_at: InstantText | None


class ReleaseResult(ResponseModel):
    id: str
    status: Literal["released", "quarantined", "superseded", "not_held"] = Field(
        description="superseded: it breaks nothing now, but a replace applied to its window "
        "after it was received supersedes it; it stays held"
    )
    violations: list[Violation]
    superseded_by: str | None = None


class QuarantineRelease(ResponseModel):
    """What a release did: events counted now, events still held (with the violations they
    have under the contract in force), ids that name no held event of the metric."""

    metric_key: str
    released: int
    still_quarantined: int
    not_held: int
    remaining: int = Field(description="events of the metric still held after this release")
    results: list[ReleaseResult]


class UsageGroup(ResponseModel):
    """The usage of one group of a metric's `group_by` under one meter version."""

    meter_version: int
    group: dict[str, str | None]
    value: DecimalText
    event_count: int


class RegionAsOf(ResponseModel):
    region: str
    as_of: InstantText | None = Field(
        description="every event the region received before this instant is counted here "
        "(null: nothing received from it yet)"
    )


class Completeness(ResponseModel):
    """API.md §10: whether every region's events up to the window's end are here."""

    complete: bool = Field(
        description="the window is over and every region has completed it (a window still "
        "open is never complete)"
    )
    complete_until: InstantText | None = Field(
        description="how far the window is known here: its end when complete, else the "
        "instant before which every region's events are all here (null: a region has "
        "reported nothing yet)"
    )
    regions_lacking: list[str] = Field(description="regions that have not completed the window")


class UsageSummary(Completeness):
    """One metric's usage of a customer in [from, to)."""

    customer_id: str
    metric_key: str
    from_: InstantText = Field(alias="from")
    to: InstantText
    value: DecimalText | None = Field(
        description="null when the meter versions in the window aggregate differently "
        "(then `groups` has each version's value)"
    )
    event_count: int
    consistency: Literal["eventual", "exact"]
    as_of: InstantText = Field(
        description="realtime: the fold watermark (events received before it are counted)"
    )
    approximate: bool = Field(description="a real-time percentile from its sketch")
    meter_versions: list[int]
    groups: list[UsageGroup]
    checksum: Checksum | None = Field(description="exact mode: of exactly the events counted")
    excluded_events: int = Field(
        description="events of the window stored but not counted because the meter's "
        "filters exclude them (a property missing or with another value)"
    )
    regions: list[RegionAsOf] = Field(description="up to when each region's events are here")


class UsageSummaries(ResponseModel):
    """Without `metric_key`: every metric the customer has usage for in the window."""

    data: list[UsageSummary]


class ParitySide(ResponseModel):
    value: DecimalText | None
    event_count: int
    approximate: bool
    meter_versions: list[int]
    groups: list[UsageGroup]


class ExactParitySide(ParitySide):
    checksum: Checksum | None


class MetricParity(ResponseModel):
    metric_key: str
    status: Literal["agree", "catching_up", "drift"]
    realtime: ParitySide
    exact: ExactParitySide
    difference: DecimalText | None
    pending_event_count: int = Field(description="events in the window not folded yet")
    refold_pending: bool


class UsageParity(ResponseModel):
    """Real-time against exact for every metric of a customer, read in one snapshot."""

    customer_id: str
    from_: InstantText = Field(alias="from")
    to: InstantText
    as_of: InstantText
    caught_up: bool
    agree: bool
    data: list[MetricParity]


class Correction(ResponseModel):
    """A correction of a metric's usage (API.md §19)."""

    id: str
    metric_key: str
    customer_id: str | None = Field(description="null: every customer's events")
    from_: InstantText = Field(alias="from")
    to: InstantText
    mode: Literal["replace", "amend"]
    reason: str
    status: Literal["open", "applied", "reverted"]
    events: int = Field(description="events posted into it (counted once it is applied)")
    retracted: int = Field(description="stored events an amend supersedes, by key")
    created_by: str
    created_at: InstantText
    applied_at: InstantText | None
    applied_by: str | None
    reverted_at: InstantText | None
    reverted_by: str | None


class PeriodChange(ResponseModel):
    """What a correction does to one billing period of one subscription."""

    customer_id: str
    subscription_id: str
    period: Period
    old_quantity: DecimalText
    new_quantity: DecimalText
    quantity_difference: DecimalText
    old_amount: DecimalText
    new_amount: DecimalText
    amount_difference: DecimalText
    carried_by: Literal["open_period", "draft", "adjustment"] = Field(
        description="open_period: counted live; draft: re-priced; adjustment: an issued "
        "invoice's difference, on the customer's next invoice"
    )
    invoice_id: str | None
    number: str | None


class CorrectionPreview(ResponseModel):
    correction_id: str
    metric_key: str
    events: int
    retracted: int
    periods: list[PeriodChange]
