"""The `api` function: API keys, the catalog (metrics, price plans, customers,
subscriptions) and the audit trail. Each handler: parse, call one service, render."""

from __future__ import annotations

from typing import Annotated, Literal

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from core import auth
from core.domain.contracts import TeamName
from core.domain.corrections import NewCorrection, Retraction
from core.domain.coupons import NewCoupon, Redemption
from core.domain.customers import (
    Cancellation,
    CustomerFields,
    NewCustomer,
    NewSubscription,
    PlanChange,
)
from core.domain.errors import FieldError, ValidationFailed
from core.domain.events import BATCH_BODY_SCHEMA
from core.domain.fields import PlanCode
from core.domain.metrics import MetricDefinition, MetricVersionDefinition
from core.domain.pricing.charges import PlanVersionDefinition, PriceSimulation
from core.domain.regions import NewRegion
from core.domain.responses.catalog import (
    ApiKey,
    Coupon,
    CreatedApiKey,
    Customer,
    Discount,
    Discounts,
    EventJsonSchema,
    Metric,
    Plan,
    Subscription,
)
from core.domain.responses.common import Page
from core.domain.responses.ingest import BATCH_RESULT_SCHEMA
from core.domain.responses.invoices import CorrectionSettled
from core.domain.responses.operations import AuditEntry, DeadLetter, Stats
from core.domain.responses.pricing import PriceSimulationResult
from core.domain.responses.regions import Region, RegionDuplicate, Regions
from core.domain.responses.usage import Correction, CorrectionPreview
from core.services import api_keys, audit, corrections, dead_letters, regions, simulation, stats
from core.services.catalog import coupons, customers, metrics, plans, subscriptions
from functions import console, parameters
from functions.declarations import PAGE, Link, body_id, choice, instant, text, whole_number
from functions.http import JSON_CONTENT_TYPE, FunctionApp, Reply, Request, list_reply, validate
from functions.ingest import batch_events, batch_response
from functions.parameters import BIGINT_MAX

APP = FunctionApp("api", dead_letter_sink=True, writes_at_central=True)


# -- API keys ---------------------------------------------------------------------------


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[
        list[Literal["events:write", "read", "admin", "corrections:write"]],
        Field(min_length=1, max_length=4),
    ]
    team: TeamName | None = Field(
        default=None, description="the team the key belongs to: owners of metrics (§18)"
    )


@APP.route(
    "/v1/api-keys",
    ["POST"],
    body=CreateApiKey,
    status=201,
    secret_fields=("secret",),
    response=CreatedApiKey,
    links=[body_id("key_id", "api.revoke_api_key")],
)
def create_api_key(request: Request) -> Reply:
    """The key with its `secret`, shown in this answer only (a replay under the same
    Idempotency-Key answers without it: header Abaxus-Secret-Redacted)."""
    body = validate(CreateApiKey, request.json())
    created = api_keys.create_key(
        request.require_caller(), name=body.name, scopes=body.scopes, team=body.team
    )
    return Reply({**created.key, "secret": created.secret}, status=201)


@APP.route("/v1/api-keys", response=Page[ApiKey], query=PAGE)
def list_api_keys(request: Request) -> Reply:
    return list_reply(*api_keys.list_keys(cursor=request.query("cursor"), limit=request.limit()))


@APP.route("/v1/api-keys/<key_id>", ["DELETE"], response=ApiKey)
def revoke_api_key(request: Request) -> Reply:
    return Reply(api_keys.revoke_key(request.require_caller(), request.params["key_id"]))


# -- metrics ----------------------------------------------------------------------------


@APP.route(
    "/v1/metrics",
    ["POST"],
    body=MetricDefinition,
    status=201,
    response=Metric,
    errors=[409],
    links=[
        body_id("key", "api.get_metric", "/key"),
        body_id("key", "api.create_metric_version", "/key"),
        body_id("key", "api.archive_metric", "/key"),
        body_id("metric_key", "ingest.list_events", "/key"),
    ],
)
def create_metric(request: Request) -> Reply:
    definition = validate(MetricDefinition, request.json())
    return Reply(metrics.create_metric(request.require_caller(), definition), status=201)


@APP.route("/v1/metrics", response=Page[Metric], query=PAGE)
def list_metrics(request: Request) -> Reply:
    return list_reply(*metrics.list_metrics(cursor=request.query("cursor"), limit=request.limit()))


@APP.route("/v1/metrics/<key>", response=Metric)
def get_metric(request: Request) -> Reply:
    return Reply(metrics.get_metric(request.params["key"]))


@APP.route(
    "/v1/metrics/<key>/versions",
    ["POST"],
    body=MetricVersionDefinition,
    status=201,
    response=Metric,
    errors=[409],
    # admin, or the owning team's corrections:write key (403 not_owner otherwise)
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def create_metric_version(request: Request) -> Reply:
    definition = validate(MetricVersionDefinition, request.json())
    return Reply(
        metrics.add_version(request.require_caller(), request.params["key"], definition), status=201
    )


@APP.route("/v1/metrics/<key>/versions/<int:version>/schema", response=EventJsonSchema)
def metric_version_schema(request: Request) -> Reply:
    """The JSON Schema (draft 2020-12) of a whole event of that version: what a producer
    validates before sending; a CloudEvent may name it in `dataschema`."""
    return Reply(metrics.version_schema(request.params["key"], int(request.params["version"])))


@APP.route("/v1/metrics/<key>/contract")
def metric_contract(request: Request) -> Reply:
    """The metric's contract in force as an Open Data Contract Standard (ODCS v3) YAML
    document."""
    key = request.params["key"]
    url = flask.request.host_url.rstrip("/") + f"/v1/metrics/{key}/versions/{{version}}/schema"
    return Reply(
        metrics.odcs_contract(key, url),
        content_type="application/yaml; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="{key}.odcs.yaml"'},
    )


@APP.route("/v1/metrics/<key>", ["DELETE"], response=Metric)
def archive_metric(request: Request) -> Reply:
    return Reply(metrics.archive_metric(request.require_caller(), request.params["key"]))


# -- price plans ------------------------------------------------------------------------


class NewPlan(PlanVersionDefinition):
    code: PlanCode


@APP.route(
    "/v1/price-plans",
    ["POST"],
    body=NewPlan,
    status=201,
    response=Plan,
    errors=[409],
    links=[
        body_id("code", "api.get_plan", "/code"),
        body_id("code", "api.create_plan_version", "/code"),
        body_id("code", "api.archive_plan", "/code"),
    ],
)
def create_plan(request: Request) -> Reply:
    body = validate(NewPlan, request.json())
    definition = PlanVersionDefinition.model_validate(body.model_dump(exclude={"code"}))
    return Reply(plans.create_plan(request.require_caller(), body.code, definition), status=201)


@APP.route("/v1/price-plans", response=Page[Plan], query=PAGE)
def list_plans(request: Request) -> Reply:
    return list_reply(*plans.list_plans(cursor=request.query("cursor"), limit=request.limit()))


@APP.route(
    "/v1/price-plans/<code>",
    response=Plan,
    query=[whole_number("version", "a version of the plan (default: the latest)")],
)
def get_plan(request: Request) -> Reply:
    raw = request.query("version")
    if raw is not None and not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 1_000_000):
        raise ValidationFailed(
            "version must be a whole number >= 1",
            errors=[FieldError(("query", "version"), "not a version number")],
        )
    return Reply(plans.get_plan(request.params["code"], int(raw) if raw else None))


@APP.route(
    "/v1/price-plans/<code>/versions",
    ["POST"],
    body=PlanVersionDefinition,
    status=201,
    response=Plan,
    errors=[409],
)
def create_plan_version(request: Request) -> Reply:
    definition = validate(PlanVersionDefinition, request.json())
    return Reply(
        plans.add_version(request.require_caller(), request.params["code"], definition), status=201
    )


@APP.route(
    "/v1/price-plans/<code>/simulate",
    ["POST"],
    body=PriceSimulation,
    response=PriceSimulationResult,
    scope=auth.SCOPE_READ,
)
def simulate_plan(request: Request) -> Reply:
    """Price candidate charges over the last `periods` invoiced periods of every
    subscription on the plan, against what those periods were billed (invoice usage lines
    plus later late-usage and correction adjustments). Nothing is stored or changed."""
    body = validate(PriceSimulation, request.json())
    return Reply(simulation.simulate(request.params["code"], body))


@APP.route("/v1/price-plans/<code>", ["DELETE"], response=Plan)
def archive_plan(request: Request) -> Reply:
    return Reply(plans.archive_plan(request.require_caller(), request.params["code"]))


# -- customers --------------------------------------------------------------------------


@APP.route(
    "/v1/customers",
    ["POST"],
    body=NewCustomer,
    status=201,
    response=Customer,
    errors=[409],
    links=[
        body_id("customer_id", "api.get_customer"),
        body_id("customer_id", "api.change_customer"),
        body_id("customer_id", "api.archive_customer"),
        body_id("customer_id", "api.list_subscriptions"),
        body_id("customer_id", "ingest.list_events"),
        body_id("customer_id", "aggregate.usage_summary"),
        body_id("customer_id", "aggregate.usage_parity"),
        body_id("customer_id", "invoice.list_invoices"),
        body_id("customer_id", "invoice.list_adjustments"),
        body_id("customer_id", "charge.list_payments"),
    ],
)
def create_customer(request: Request) -> Reply:
    return Reply(
        customers.create_customer(request.require_caller(), validate(NewCustomer, request.json())),
        status=201,
    )


@APP.route("/v1/customers", response=Page[Customer], query=PAGE)
def list_customers(request: Request) -> Reply:
    return list_reply(
        *customers.list_customers(cursor=request.query("cursor"), limit=request.limit())
    )


@APP.route("/v1/customers/<customer_id>", response=Customer)
def get_customer(request: Request) -> Reply:
    return Reply(customers.get_customer(request.params["customer_id"]))


@APP.route(
    "/v1/customers/<customer_id>",
    ["PATCH"],
    body=CustomerFields,
    response=Customer,
    errors=[409],
)
def change_customer(request: Request) -> Reply:
    fields = validate(CustomerFields, request.json())
    return Reply(
        customers.change_customer(request.require_caller(), request.params["customer_id"], fields)
    )


@APP.route("/v1/customers/<customer_id>", ["DELETE"], response=Customer)
def archive_customer(request: Request) -> Reply:
    return Reply(
        customers.archive_customer(request.require_caller(), request.params["customer_id"])
    )


# -- subscriptions ----------------------------------------------------------------------


@APP.route(
    "/v1/subscriptions",
    ["POST"],
    body=NewSubscription,
    status=201,
    response=Subscription,
    links=[
        body_id("subscription_id", "api.get_subscription"),
        body_id("subscription_id", "api.cancel_subscription"),
        Link(
            "calculate.calculate_route",
            request_body={"subscription_id": "$response.body#/id"},
            description="price the subscription's current period",
        ),
        Link(
            "invoice.create_invoice",
            request_body={
                "subscription_id": "$response.body#/id",
                "period_start": "$response.body#/current_period/start",
                "period_end": "$response.body#/current_period/end",
            },
            description="the draft invoice of the subscription's current period",
        ),
    ],
)
def create_subscription(request: Request) -> Reply:
    body = validate(NewSubscription, request.json())
    return Reply(subscriptions.create_subscription(request.require_caller(), body), status=201)


@APP.route(
    "/v1/subscriptions",
    response=Page[Subscription],
    query=[parameters.customer_id("only this customer's"), *PAGE],
)
def list_subscriptions(request: Request) -> Reply:
    page = subscriptions.list_subscriptions(
        customer_id=request.query("customer_id"),
        cursor=request.query("cursor"),
        limit=request.limit(),
    )
    return list_reply(*page)


@APP.route("/v1/subscriptions/<subscription_id>", response=Subscription)
def get_subscription(request: Request) -> Reply:
    return Reply(subscriptions.get_subscription(request.params["subscription_id"]))


@APP.route(
    "/v1/subscriptions/<subscription_id>/cancel",
    ["POST"],
    body=Cancellation,
    response=Subscription,
    errors=[409],
)
def cancel_subscription(request: Request) -> Reply:
    body = validate(Cancellation, request.json() if request.body.strip() else {})
    return Reply(
        subscriptions.cancel_subscription(
            request.require_caller(), request.params["subscription_id"], body
        )
    )


@APP.route(
    "/v1/subscriptions/<subscription_id>/change",
    ["POST"],
    body=PlanChange,
    response=Subscription,
    errors=[409],
    links=[body_id("subscription_id", "api.get_subscription")],
)
def change_subscription(request: Request) -> Reply:
    """Change plan: the subscription ends at `effective` and the new one (returned, with
    `previous_subscription_id`) starts there on the new plan version, in the same billing
    periods. Usage is split by event time at that instant; flat fees and commitments are
    prorated by days on each side. A customer charged twice for one metric over
    overlapping time: 409 overlapping_subscription."""
    body = validate(PlanChange, request.json())
    return Reply(
        subscriptions.change_subscription(
            request.require_caller(), request.params["subscription_id"], body
        )
    )


# -- coupons and discounts --------------------------------------------------------------


@APP.route(
    "/v1/coupons",
    ["POST"],
    body=NewCoupon,
    status=201,
    response=Coupon,
    errors=[409],
    links=[body_id("code", "api.get_coupon", "/code")],
)
def create_coupon(request: Request) -> Reply:
    body = validate(NewCoupon, request.json())
    return Reply(coupons.create_coupon(request.require_caller(), body), status=201)


@APP.route("/v1/coupons", response=Page[Coupon], query=PAGE)
def list_coupons(request: Request) -> Reply:
    return list_reply(*coupons.list_coupons(cursor=request.query("cursor"), limit=request.limit()))


@APP.route("/v1/coupons/<code>", response=Coupon)
def get_coupon(request: Request) -> Reply:
    return Reply(coupons.get_coupon(request.params["code"]))


@APP.route("/v1/coupons/<code>", ["DELETE"], response=Coupon)
def archive_coupon(request: Request) -> Reply:
    """Archive: no new redemptions; discounts already redeemed go on."""
    return Reply(coupons.archive_coupon(request.require_caller(), request.params["code"]))


@APP.route(
    "/v1/subscriptions/<subscription_id>/discounts",
    ["POST"],
    body=Redemption,
    status=201,
    response=Discount,
    errors=[409],
)
def redeem_coupon(request: Request) -> Reply:
    """Redeem a coupon on the subscription: it applies from the current period. Refused:
    409 coupon_archived, coupon_expired (after `redeem_by`), coupon_exhausted (at
    `max_redemptions`, also under concurrent redemptions), already_redeemed."""
    body = validate(Redemption, request.json())
    return Reply(
        coupons.redeem(request.require_caller(), request.params["subscription_id"], body),
        status=201,
    )


@APP.route("/v1/subscriptions/<subscription_id>/discounts", response=Discounts)
def list_discounts(request: Request) -> Reply:
    return Reply({"data": coupons.list_discounts(request.params["subscription_id"])})


@APP.route(
    "/v1/subscriptions/<subscription_id>/discounts/<discount_id>", ["DELETE"], response=Discount
)
def remove_discount(request: Request) -> Reply:
    """End a discount: it applies to no period starting after now (kept, marked removed)."""
    return Reply(
        coupons.remove_discount(
            request.require_caller(),
            request.params["subscription_id"],
            request.params["discount_id"],
        )
    )


# -- dead letters -----------------------------------------------------------------------


@APP.route(
    "/v1/dead-letters",
    response=Page[DeadLetter],
    links=[body_id("dead_letter_id", "api.redeliver_dead_letter", "/data/0/id")],
    query=[text("type", "only CloudEvents of this type"), *PAGE],
)
def list_dead_letters(request: Request) -> Reply:
    """CloudEvents the broker could not deliver, kept as received, with why."""
    page = dead_letters.list_dead_letters(
        ce_type=request.query("type"), cursor=request.query("cursor"), limit=request.limit()
    )
    return list_reply(*page)


# -- audit ------------------------------------------------------------------------------


@APP.route(
    "/v1/audit",
    response=Page[AuditEntry],
    query=[
        text("entity", "customer, metric, price_plan, subscription, invoice, …"),
        text("entity_id", "with `entity`: one entity's history"),
        *PAGE,
    ],
)
def list_audit(request: Request) -> Reply:
    page = audit.list_entries(
        entity=request.query("entity"),
        entity_id=request.query("entity_id"),
        cursor=request.query("cursor"),
        limit=request.limit(),
    )
    return list_reply(*page)


@APP.route(
    f"/v1/dead-letters/<int(max={BIGINT_MAX}):dead_letter_id>/redeliver",
    ["POST"],
    response=DeadLetter,
    anywhere=True,  # a region re-sends its own dead letters
)
def redeliver_dead_letter(request: Request) -> Reply:
    """Send a dead-lettered CloudEvent through the bus again, exactly as received (fix the
    cause first); the dead letter stays, with when it was re-sent."""
    return Reply(
        dead_letters.redeliver(request.require_caller(), int(request.params["dead_letter_id"]))
    )


# -- regions (API.md §10) -----------------------------------------------------------------


@APP.route("/v1/regions", response=Regions)
def get_regions(request: Request) -> Reply:
    """Each region this central receives events from: status, complete_until (every event
    the region received before it is here), lag, events folded. One database (`all`):
    the local region, complete up to now."""
    return Reply({"data": regions.list_regions()})


@APP.route("/v1/regions", ["POST"], body=NewRegion, status=201, response=Region, errors=[409, 421])
def post_region(request: Request) -> Reply:
    """Subscribe to a region's events (its residency zone's publication): PostgreSQL logical
    replication copies what the region holds, then streams. A central only."""
    body = validate(NewRegion, request.json())
    return Reply(regions.add_region(request.require_caller(), body.model_dump()), status=201)


@APP.route(
    "/v1/regions/duplicates",
    response=Page[RegionDuplicate],
    query=[*PAGE],
)
def get_region_duplicates(request: Request) -> Reply:
    """Copies of one idempotency key accepted in several regions that are not counted (the
    copy that counts is named in each)."""
    return list_reply(
        *regions.list_duplicates(cursor=request.query("cursor"), limit=request.limit())
    )


@APP.route("/v1/regions/<region:region>", ["DELETE"], response=Region, errors=[404, 421])
def delete_region(request: Request) -> Reply:
    """Stop receiving a region's events (its subscription is dropped); what it sent stays,
    and so do its invoices. Attaching it again takes a new name."""
    return Reply(regions.detach_region(request.require_caller(), request.params["region"]))


# -- the overview and the console ---------------------------------------------------------


@APP.route(
    "/v1/stats",
    response=Stats,
    query=[
        instant("from", "the window's start (with `to`; default: this UTC month)"),
        instant("to", "the window's end (with `from`)"),
    ],
)
def get_stats(request: Request) -> Reply:
    """Events ingested, active subscriptions, period revenue and ingest p95 over a window
    (default: this UTC month) and the window of equal length before it (API.md §9)."""
    return Reply(stats.overview(start=request.instant("from"), end=request.instant("to")))


console.register(APP)


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    return APP(request)


# -- corrections (API.md §19) -------------------------------------------------------------

CORRECTION_STATUSES = ("open", "applied", "reverted")
CORRECTION_LINKS = [
    body_id("correction_id", f"api.{name}")
    for name in (
        "get_correction",
        "post_correction_events",
        "retract_correction_events",
        "preview_correction",
        "apply_correction",
        "revert_correction",
    )
]


@APP.route(
    "/v1/corrections",
    ["POST"],
    body=NewCorrection,
    status=201,
    response=Correction,
    scope=auth.SCOPE_CORRECTIONS_WRITE,
    links=CORRECTION_LINKS,
)
def create_correction(request: Request) -> Reply:
    """Open a correction of a metric's usage in a window (owner or admin): `replace`
    supersedes the window's events on apply, `amend` only those it retracts."""
    body = validate(NewCorrection, request.json())
    return Reply(corrections.create(request.require_caller(), body), status=201)


@APP.route(
    "/v1/corrections",
    response=Page[Correction],
    query=[
        parameters.metric_key("only this metric's"),
        choice("status", CORRECTION_STATUSES, "only corrections in this state"),
        *PAGE,
    ],
)
def list_corrections(request: Request) -> Reply:
    return list_reply(
        *corrections.list_corrections(
            metric_key=request.query("metric_key") or None,
            status_=request.one_of("status", CORRECTION_STATUSES),
            cursor=request.query("cursor"),
            limit=request.limit(),
        )
    )


@APP.route("/v1/corrections/<correction_id>", response=Correction)
def get_correction(request: Request) -> Reply:
    return Reply(corrections.get(request.params["correction_id"]))


@APP.route(
    "/v1/corrections/<correction_id>/events",
    ["POST"],
    body=BATCH_BODY_SCHEMA,
    status=207,
    response=BATCH_RESULT_SCHEMA,
    errors=[409],
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def post_correction_events(request: Request) -> Reply:
    """Events that take the place of the superseded ones once the correction is applied:
    a batch exactly as POST /v1/events/batch (keys unique forever, per-event results);
    each must be of the correction's metric (and customer) and inside its window."""
    events = batch_events(request.json())
    outcomes = corrections.add_events(
        request.require_caller(), request.params["correction_id"], events
    )
    return Reply(batch_response(outcomes), status=207, content_type=JSON_CONTENT_TYPE)


@APP.route(
    "/v1/corrections/<correction_id>/retract",
    ["POST"],
    body=Retraction,
    response=Correction,
    errors=[409],
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def retract_correction_events(request: Request) -> Reply:
    """Name the stored events an `amend` supersedes (by idempotency key)."""
    body = validate(Retraction, request.json())
    return Reply(
        corrections.retract(
            request.require_caller(), request.params["correction_id"], body.idempotency_keys
        )
    )


@APP.route("/v1/corrections/<correction_id>/preview", response=CorrectionPreview, errors=[409])
def preview_correction(request: Request) -> Reply:
    """What applying would do, exactly, changing nothing: per customer and billing period
    the old and new quantity and amount, the difference, and what carries it."""
    return Reply(corrections.preview(request.require_caller(), request.params["correction_id"]))


@APP.route(
    "/v1/corrections/<correction_id>/apply",
    ["POST"],
    response=CorrectionSettled,
    errors=[409],
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def apply_correction(request: Request) -> Reply:
    """Apply atomically: usage reflects it at once, issued periods get adjustments, drafts
    are re-priced. A second apply is 409 correction_not_open."""
    return Reply(corrections.apply(request.require_caller(), request.params["correction_id"]))


@APP.route(
    "/v1/corrections/<correction_id>/revert",
    ["POST"],
    response=CorrectionSettled,
    errors=[409],
    scope=auth.SCOPE_CORRECTIONS_WRITE,
)
def revert_correction(request: Request) -> Reply:
    """The originals count again, with adjustments the other way for issued periods."""
    return Reply(corrections.revert(request.require_caller(), request.params["correction_id"]))
