"""The catalog as the API shows it: API keys, metrics and their versions, price plans and
their charges, customers and subscriptions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from core.domain.metrics import Aggregation
from core.domain.periods import Interval
from core.domain.responses.common import (
    Currency,
    DecimalText,
    InstantText,
    Period,
    ResponseModel,
)

Scope = Literal["events:write", "read", "admin", "corrections:write"]


class ApiKey(ResponseModel):
    """An API key: never its hash, never its secret."""

    id: str
    name: str
    scopes: list[Scope]
    team: str | None = Field(description="the team the key belongs to (API.md §18)")
    prefix: str = Field(description="the first characters of the secret, to recognise it")
    created_at: InstantText
    revoked_at: InstantText | None


class CreatedApiKey(ApiKey):
    """A new key. `secret` is in this answer only: a replay under the same Idempotency-Key
    answers without it (header Abaxus-Secret-Redacted), so the schema does not require it."""

    secret: str | SkipJsonSchema[None] = Field(default=None, description="abx_…, shown once")


class ValueRuleShown(ResponseModel):
    type: Literal["integer", "number"]
    minimum: DecimalText | None = None
    maximum: DecimalText | None = None


class ContractShown(ResponseModel):
    """A metric version's data contract (API.md §18); fields left unset are absent."""

    owner: str | None = Field(default=None, description="the team that owns the metric")
    producers: list[str] | None = Field(
        default=None, description="API key names (HTTP) or CloudEvent sources that may emit it"
    )
    value: ValueRuleShown | None = None
    properties: dict[str, Any] | None = Field(
        default=None, description="a JSON Schema (draft 2020-12) for the event's properties"
    )
    on_violation: Literal["reject", "quarantine"]


class EventJsonSchema(ResponseModel):
    """The JSON Schema (draft 2020-12) of a whole event of one metric version."""

    schema_: Literal["https://json-schema.org/draft/2020-12/schema"] = Field(alias="$schema")
    id_: str = Field(alias="$id", description="urn:abaxus:metric:{key}:v{version}")
    title: str
    type: Literal["object"]
    required: list[str]
    additionalProperties: bool
    properties: dict[str, dict[str, Any]] = Field(
        description="customer_id, metric_key, value, timestamp, idempotency_key, properties: "
        "value and properties as the contract states them"
    )


class MetricVersion(ResponseModel):
    version: int
    name: str
    unit: str
    aggregation: Aggregation
    unique_property: str | None
    percentile: DecimalText | None
    filters: dict[str, list[str]]
    group_by: list[str]
    effective_from: InstantText
    effective_to: InstantText | None = Field(description="where the next version starts")
    contract: ContractShown | None = Field(description="null: any well-formed event counts")
    created_at: InstantText


class Metric(ResponseModel):
    """A metric with the definition in force now (the first version if none is yet) and
    every version with its [effective_from, effective_to)."""

    key: str
    version: int
    name: str
    unit: str
    aggregation: Aggregation
    unique_property: str | None
    percentile: DecimalText | None
    filters: dict[str, list[str]]
    group_by: list[str]
    effective_from: InstantText
    effective_to: InstantText | None
    contract: ContractShown | None = Field(description="the contract in force now")
    owner: str | None = Field(description="the team owning the contract in force now")
    producers: list[str] | None = Field(description="who may emit events now; null: any key")
    created_at: InstantText
    archived_at: InstantText | None
    versions: list[MetricVersion]


# -- charges, one shape per pricing model (discriminated by `model`) ------------------------
# As stored with a plan version every field is present (null when unset); inside a
# calculation line (`charge_definition`) fields that are null are left out.


class _ChargeShown(ResponseModel):
    name: str | None = None


class TierShown(ResponseModel):
    up_to: DecimalText | None = Field(default=None, description="inclusive; null: open-ended")
    unit_price: DecimalText
    flat_fee: DecimalText


class PerUnitCharge(_ChargeShown):
    model: Literal["per_unit"]
    metric_key: str
    unit_price: DecimalText


class TieredCharge(_ChargeShown):
    model: Literal["tiered"]
    metric_key: str
    tiers: list[TierShown]


class VolumeCharge(_ChargeShown):
    model: Literal["volume"]
    metric_key: str
    tiers: list[TierShown]


class PackageCharge(_ChargeShown):
    model: Literal["package"]
    metric_key: str
    package_size: DecimalText
    package_price: DecimalText
    free_units: DecimalText


class FlatFeeCharge(_ChargeShown):
    model: Literal["flat_fee"]
    amount: DecimalText


class MatrixPriceShown(ResponseModel):
    match: dict[str, str]
    unit_price: DecimalText


class MatrixCharge(_ChargeShown):
    model: Literal["matrix"]
    metric_key: str
    prices: list[MatrixPriceShown]
    default_unit_price: DecimalText | None = None


class CustomFormulaCharge(_ChargeShown):
    model: Literal["custom_formula"]
    metric_key: str
    formula: str


ChargeShown = Annotated[
    PerUnitCharge
    | TieredCharge
    | VolumeCharge
    | PackageCharge
    | FlatFeeCharge
    | MatrixCharge
    | CustomFormulaCharge,
    Field(discriminator="model"),
]


class Plan(ResponseModel):
    """One version of a price plan (the latest unless `?version=` asked for another)."""

    code: str
    version: int
    name: str
    currency: Currency
    currency_minor_units: int
    interval: Interval
    charges: list[ChargeShown]
    trial_days: int | None = Field(description="days of trial from a subscription's start")
    trial_bills_usage: bool = Field(description="whether usage during a trial is billed")
    minimum_commitment: DecimalText | None = Field(
        description="per billing period: a true-up line brings the period's charges up to it"
    )
    maximum_charge: DecimalText | None = Field(
        description="per billing period: a negative line caps the period's charges at it"
    )
    definition_sha256: str = Field(description="SHA-256 (hex) of the version's definition")
    versions: list[int]
    created_at: InstantText
    archived_at: InstantText | None


class Customer(ResponseModel):
    id: str
    name: str
    email: str | None
    currency: Currency
    region: str | None
    billing_provider: Literal["stripe", "manual"]
    provider_customer_id: str | None
    payment_method: str | None
    metadata: dict[str, str]
    created_at: InstantText
    updated_at: InstantText
    archived_at: InstantText | None


class Subscription(ResponseModel):
    id: str
    customer_id: str
    plan_code: str
    plan_version: int
    interval: Interval
    status: Literal["scheduled", "active", "ended"]
    starts_at: InstantText
    ends_at: InstantText | None
    canceled_at: InstantText | None
    current_period: Period | None = Field(
        description="the period containing now (the first before the start); null once ended"
    )
    overrides: list[dict[str, Any]] = Field(
        description="each names its charge (`charge` or `metric_key`) and the fields it replaces"
    )
    trial_days: int | None = Field(
        description="in force: the subscription's own, else its plan version's"
    )
    trial_ends_at: InstantText | None = Field(description="null without a trial")
    minimum_commitment: DecimalText | None = Field(
        description="per period, in force: the subscription's own, else its plan version's"
    )
    maximum_charge: DecimalText | None = Field(
        description="per period, in force: the subscription's own, else its plan version's"
    )
    previous_subscription_id: str | None = Field(
        description="the subscription a plan change replaced with this one"
    )
    changed_at: InstantText | None = Field(
        description="when a plan change ended this subscription (at `ends_at`)"
    )
    created_at: InstantText


class AppliesToShown(ResponseModel):
    metric_keys: list[str]


class Coupon(ResponseModel):
    """A coupon (API.md §12): redeemed on subscriptions as discounts."""

    code: str
    name: str
    percent_off: DecimalText | None
    amount_off: DecimalText | None
    currency: Currency | None
    duration: Literal["once", "repeating", "forever"]
    duration_periods: int | None
    applies_to: AppliesToShown | None = Field(description="null: every charge of the period")
    max_redemptions: int | None
    redeem_by: InstantText | None
    times_redeemed: int
    created_at: InstantText
    archived_at: InstantText | None = Field(description="archived: no new redemptions")


class Discount(ResponseModel):
    """A coupon redeemed on a subscription: a negative line on the invoices of the periods
    it is in force for, from `first_period_start` for `periods` periods (null: every one)."""

    id: str
    subscription_id: str
    coupon_code: str
    name: str
    percent_off: DecimalText | None
    amount_off: DecimalText | None
    currency: Currency | None
    applies_to: AppliesToShown | None
    duration: Literal["once", "repeating", "forever"]
    periods: int | None
    first_period_start: InstantText
    carried_from: str | None = Field(
        description="the discount of the subscription a plan change replaced"
    )
    created_at: InstantText
    removed_at: InstantText | None = Field(description="no period starting after it")


class Discounts(ResponseModel):
    data: list[Discount]
