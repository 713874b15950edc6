"""What operators read: the audit trail, dead letters and the overview (`GET /v1/stats`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from core.domain.responses.common import DecimalText, InstantText, Period, ResponseModel


class AuditEntry(ResponseModel):
    """One row of the hash-chained audit trail (docs/concepts.md, "The audit trail")."""

    id: int
    occurred_at: InstantText
    actor: str = Field(description="the API key id, or `system`")
    action: str
    entity: str
    entity_id: str
    request_id: str | None
    state_sha256: str
    changes: dict[str, Any] | None = Field(description="each changed field's before and after")
    prev_sha256: str
    row_sha256: str


class DeadLetter(ResponseModel):
    """A CloudEvent the broker could not deliver, kept exactly as received, with why."""

    id: int
    received_at: InstantText
    ce_id: str
    ce_source: str
    ce_type: str
    error_dest: str | None
    error_code: str | None
    error_data: str | None = Field(description="base64 of the refusing answer's body")
    error: dict[str, Any] | None = Field(description="error_data decoded, when it is a problem")
    redelivered_at: InstantText | None
    headers: dict[str, str]
    body_base64: str


class CountFigure(ResponseModel):
    value: int
    previous: int
    change: DecimalText | None = Field(description="(value - previous) / previous; null at 0")


class MoneyFigure(ResponseModel):
    value: DecimalText
    previous: DecimalText
    change: DecimalText | None


class LatencyFigure(ResponseModel):
    value: int | None = Field(description="the p95's bucket bound in ms; null without requests")
    previous: int | None
    change: DecimalText | None


class Revenue(ResponseModel):
    basis: str = Field(description="what the figure counts")
    by_currency: dict[str, MoneyFigure]


class Stats(ResponseModel):
    """The overview over a window and the window of equal length before it (API.md §9)."""

    window: Period
    previous: Period
    consistency: Literal["eventual"]
    as_of: InstantText
    events_ingested: CountFigure
    active_subscriptions: CountFigure
    period_revenue: Revenue
    ingest_latency_p95_ms: LatencyFigure
