"""Corrections (API.md §19): wrong usage is superseded, never edited.

A `replace` correction supersedes every event of its metric (and customer, when it names
one) whose timestamp is in [from, to) and that was received before the apply; the events
posted into it take their place. An `amend` supersedes only the events whose keys it
retracts, and adds the events posted into it. A revert withdraws the correction: what it
superseded counts again and what it added stops counting.

Supersession is data of its own (`Supersession`, read from the corrections table), applied
as predicates wherever events are counted — the exact scan, the rollups' fold and refold,
the real-time edges, the events behind an invoice line — so superseding a million events
writes one row, and raw events stay insert-only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from core.domain.errors import Conflict
from core.domain.fields import ClientId, Instant, MetricKey

RETRACT_KEYS_MAX = 5000
CORRECTION_ID = re.compile(r"^cor_[0-9a-f]{16}$")
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class NewCorrection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    metric_key: MetricKey
    customer_id: ClientId | None = None
    start: Instant = Field(alias="from")
    end: Instant = Field(alias="to")
    mode: Literal["replace", "amend"]
    reason: Reason

    @model_validator(mode="after")
    def _ordered(self) -> NewCorrection:
        if self.end <= self.start:
            raise ValueError("`to` must be after `from`")
        return self


class Retraction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    idempotency_keys: Annotated[
        list[IdempotencyKey], Field(min_length=1, max_length=RETRACT_KEYS_MAX)
    ]


class RetractEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    reason: Reason


@dataclass(frozen=True)
class ReplacedRange:
    """Events of the metric in [start, end) (of one customer, or all) received before
    `received_before` (the apply) are superseded by `correction_id`."""

    correction_id: str
    customer_id: str | None
    start: datetime
    end: datetime
    received_before: datetime


@dataclass(frozen=True)
class Supersession:
    """What supersedes a metric's events: applied replace ranges, retracted keys (key ->
    the amend that retracted it) and withdrawn corrections (reverted: their events stop
    counting)."""

    replaced: tuple[ReplacedRange, ...] = ()
    retracted: tuple[tuple[str, str], ...] = ()
    withdrawn: tuple[str, ...] = ()
    # Copies of an event accepted in several regions that do not count (API.md §10: the
    # central's region_duplicates), recorded up to this instant (None: all of them), or
    # False when the metric has none.
    region_duplicates: bool = False
    duplicates_as_of: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.replaced or self.retracted or self.withdrawn or self.region_duplicates)

    def superseded_by(
        self,
        *,
        customer_id: str,
        timestamp: datetime,
        received_at: datetime,
        idempotency_key: str,
        correction_id: str | None,
    ) -> str | None:
        """The correction that supersedes this event, or None when it counts (the same
        rule the predicates state in SQL, for one event: the events explorer)."""
        if correction_id is not None and correction_id in self.withdrawn:
            return correction_id
        for key, by in self.retracted:
            if key == idempotency_key:
                return by
        for found in reversed(self.replaced):
            if (
                (found.customer_id is None or found.customer_id == customer_id)
                and found.start <= timestamp < found.end
                and received_at < found.received_before
            ):
                return found.correction_id
        return None


EMPTY = Supersession()


def require_status(correction: dict[str, object], wanted: str, action: str) -> None:
    """A correction is applied once (open -> applied) and reverted once (applied ->
    reverted); anything else is a 409 that says where it stands."""
    if correction["status"] != wanted:
        raise Conflict(
            f"correction {correction['id']} is {correction['status']}: only an {wanted} "
            f"correction can be {action}",
            code=f"correction_not_{wanted}",
        )


def events_checksum(content_sha256s: Iterable[str]) -> str:
    """The checksum of a set of events: SHA-256 over their content hashes in byte order,
    one per line (what an adjustment of a correction states for the events it added and
    those it superseded; recomputable from the events' own hashes)."""
    digest = hashlib.sha256("\n".join(sorted(content_sha256s)).encode()).hexdigest()
    return "sha256:" + digest
