"""Coupons and discounts as clients send them (API.md §12)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.domain.canonical import decimal_text
from core.domain.fields import CurrencyCode, Instant, MetricKey, Name, PlanCode, PositiveAmount

DURATION_PERIODS_MAX = 1200
METRIC_KEYS_MAX = 50


class AppliesTo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metric_keys: Annotated[list[MetricKey], Field(min_length=1, max_length=METRIC_KEYS_MAX)]


class NewCoupon(BaseModel):
    """`percent_off` (0 < p ≤ 100) or `amount_off` + `currency`; `duration`: the discount
    applies to the period it is redeemed in and then, for `repeating`, to
    `duration_periods` periods in all, for `forever` to every period."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: PlanCode
    name: Name
    percent_off: Annotated[PositiveAmount, Field(le=100)] | None = None
    amount_off: PositiveAmount | None = None
    currency: CurrencyCode | None = None
    duration: Literal["once", "repeating", "forever"]
    duration_periods: Annotated[int, Field(ge=1, le=DURATION_PERIODS_MAX)] | None = None
    applies_to: AppliesTo | None = None
    max_redemptions: Annotated[int, Field(ge=1, le=2_000_000_000)] | None = None
    redeem_by: Instant | None = None

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("give exactly one of percent_off and amount_off")
        if self.amount_off is not None and self.currency is None:
            raise ValueError("amount_off needs its currency")
        if self.percent_off is not None and self.currency is not None:
            raise ValueError("a percent_off coupon has no currency")
        if (self.duration == "repeating") != (self.duration_periods is not None):
            raise ValueError("duration_periods is given with, and only with, duration repeating")
        return self

    def row(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "percent_off": self.percent_off,
            "amount_off": self.amount_off,
            "currency": self.currency,
            "duration": self.duration,
            "duration_periods": self.duration_periods,
            "metric_keys": None if self.applies_to is None else list(self.applies_to.metric_keys),
            "max_redemptions": self.max_redemptions,
            "redeem_by": self.redeem_by,
        }


class Redemption(BaseModel):
    """`POST /v1/subscriptions/{id}/discounts`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    coupon_code: PlanCode


def periods_of(duration: str, duration_periods: int | None) -> int | None:
    """How many billing periods a discount applies to (None: every one)."""
    if duration == "once":
        return 1
    if duration == "repeating":
        return duration_periods
    return None


def coupon_view(row: dict[str, Any]) -> dict[str, Any]:
    def text(value: Any) -> str | None:
        return None if value is None else decimal_text(value)

    return {
        "code": row["code"],
        "name": row["name"],
        "percent_off": text(row["percent_off"]),
        "amount_off": text(row["amount_off"]),
        "currency": row["currency"],
        "duration": row["duration"],
        "duration_periods": row["duration_periods"],
        "applies_to": None
        if row["metric_keys"] is None
        else {"metric_keys": list(row["metric_keys"])},
        "max_redemptions": row["max_redemptions"],
        "redeem_by": row["redeem_by"],
        "times_redeemed": row["redeemed"],
        "created_at": row["created_at"],
        "archived_at": row["archived_at"],
    }
