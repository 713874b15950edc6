"""The body of POST /v1/pricing/calculate and of `invoice.requested` CloudEvents."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from core.domain.fields import Instant


class CalculateRequest(BaseModel):
    """A subscription and a period [period_start, period_end); both or neither (then the
    subscription's current period)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    subscription_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    period_start: Instant | None = None
    period_end: Instant | None = None
