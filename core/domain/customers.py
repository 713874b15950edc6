"""Customer and subscription definitions as clients send them."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.domain.fields import ClientId, Instant, MetricKey, Name, PlanCode
from core.domain.money import is_currency
from core.domain.pricing.terms import SubscriptionTerms

METADATA_KEYS_MAX = 50
METADATA_KEY_CHARS_MAX = 40
METADATA_VALUE_CHARS_MAX = 500
METADATA_BYTES_MAX = 8 * 1024
OVERRIDES_MAX = 50
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$"

Email = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]
Text = Annotated[str, Field(min_length=1, max_length=255)]


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > METADATA_KEYS_MAX:
        raise ValueError(f"at most {METADATA_KEYS_MAX} keys")
    for key, item in value.items():
        if not 1 <= len(key) <= METADATA_KEY_CHARS_MAX:
            raise ValueError(f"keys are 1 to {METADATA_KEY_CHARS_MAX} characters")
        if len(item) > METADATA_VALUE_CHARS_MAX:
            raise ValueError(f"values are at most {METADATA_VALUE_CHARS_MAX} characters")
    if len(json.dumps(value).encode()) > METADATA_BYTES_MAX:
        raise ValueError(f"at most {METADATA_BYTES_MAX} bytes in all")
    return value


def _check_currency(value: str) -> str:
    if not is_currency(value):
        raise ValueError(f"{value} is not an ISO 4217 currency")
    return value


class CustomerFields(BaseModel):
    """What a customer may change (PATCH); every field optional there."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name | None = None
    email: Email | None = None
    region: Text | None = None
    billing_provider: Literal["stripe", "manual"] | None = None
    provider_customer_id: Text | None = None
    payment_method: Text | None = None
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(lambda cls, v: v if v is None else _check_metadata(v))


class NewCustomer(CustomerFields):
    id: ClientId
    name: Name
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    billing_provider: Literal["stripe", "manual"] = "manual"
    metadata: dict[str, str] = Field(default_factory=dict)

    _currency = field_validator("currency")(lambda cls, v: _check_currency(v))

    @model_validator(mode="after")
    def _provider(self) -> Self:
        if self.billing_provider == "stripe" and not self.provider_customer_id:
            raise ValueError("billing_provider stripe needs provider_customer_id (cus_...)")
        return self


class Override(BaseModel):
    """Replaces fields of one charge of the plan for this subscription only; the fields
    are validated against that charge when the subscription is created."""

    model_config = ConfigDict(extra="allow", frozen=True)
    charge: Name | None = None
    metric_key: MetricKey | None = None


class NewSubscription(SubscriptionTerms):
    """`trial_days`, `minimum_commitment`, `maximum_charge` override the plan version's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    customer_id: ClientId
    plan_code: PlanCode
    plan_version: Annotated[int, Field(ge=1)] | None = None
    starts_at: Instant | None = None
    overrides: Annotated[list[Override], Field(max_length=OVERRIDES_MAX)] = Field(
        default_factory=list
    )

    def override_dicts(self) -> list[dict[str, Any]]:
        return [o.model_dump(exclude_none=True) for o in self.overrides]

    def terms(self) -> dict[str, Any]:
        return SubscriptionTerms(
            trial_days=self.trial_days,
            minimum_commitment=self.minimum_commitment,
            maximum_charge=self.maximum_charge,
        ).stored()


class PlanChange(SubscriptionTerms):
    """`POST /v1/subscriptions/{id}/change`: the subscription ends at `effective` and a new
    one on `plan_code` starts there, keeping the billing anchor. Terms and overrides are
    the new subscription's own (none given: the new plan version's); a trial is not carried
    over (changing plan ends a trial)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    plan_code: PlanCode
    plan_version: Annotated[int, Field(ge=1)] | None = None
    effective: Literal["immediately", "period_end"] | Instant = "immediately"
    overrides: Annotated[list[Override], Field(max_length=OVERRIDES_MAX)] = Field(
        default_factory=list
    )

    def override_dicts(self) -> list[dict[str, Any]]:
        return [o.model_dump(exclude_none=True) for o in self.overrides]

    def terms(self) -> dict[str, Any]:
        return SubscriptionTerms(
            trial_days=self.trial_days,
            minimum_commitment=self.minimum_commitment,
            maximum_charge=self.maximum_charge,
        ).stored()


class Cancellation(BaseModel):
    """`at`: "period_end" (default) or an instant."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    at: Literal["period_end"] | Instant = "period_end"
