"""The `api` function: API keys, the catalog (metrics, price plans, customers,
subscriptions) and the audit trail. Each handler: parse, call one service, render."""

from __future__ import annotations

from typing import Annotated, Literal

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from core.domain.customers import Cancellation, CustomerFields, NewCustomer, NewSubscription
from core.domain.errors import FieldError, ValidationFailed
from core.domain.fields import PlanCode
from core.domain.metrics import MetricDefinition, MetricVersionDefinition
from core.domain.pricing.charges import PlanVersionDefinition
from core.services import api_keys, audit, dead_letters, stats
from core.services.catalog import customers, metrics, plans, subscriptions
from functions import console
from functions.http import FunctionApp, Reply, Request, list_reply, validate

APP = FunctionApp("api", dead_letter_sink=True)


# -- API keys ---------------------------------------------------------------------------


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[
        list[Literal["events:write", "read", "admin"]], Field(min_length=1, max_length=3)
    ]


@APP.route("/v1/api-keys", ["POST"], body=CreateApiKey, status=201, secret_fields=("secret",))
def create_api_key(request: Request) -> Reply:
    """The key with its `secret`, shown in this answer only (a replay under the same
    Idempotency-Key answers without it: header Abaxus-Secret-Redacted)."""
    body = validate(CreateApiKey, request.json())
    created = api_keys.create_key(request.require_caller(), name=body.name, scopes=body.scopes)
    return Reply({**created.key, "secret": created.secret}, status=201)


@APP.route("/v1/api-keys")
def list_api_keys(request: Request) -> Reply:
    return list_reply(*api_keys.list_keys(cursor=request.query("cursor"), limit=request.limit()))


@APP.route("/v1/api-keys/<key_id>", ["DELETE"])
def revoke_api_key(request: Request) -> Reply:
    return Reply(api_keys.revoke_key(request.require_caller(), request.params["key_id"]))


# -- metrics ----------------------------------------------------------------------------


@APP.route("/v1/metrics", ["POST"], body=MetricDefinition, status=201)
def create_metric(request: Request) -> Reply:
    definition = validate(MetricDefinition, request.json())
    return Reply(metrics.create_metric(request.require_caller(), definition), status=201)


@APP.route("/v1/metrics")
def list_metrics(request: Request) -> Reply:
    return list_reply(*metrics.list_metrics(cursor=request.query("cursor"), limit=request.limit()))


@APP.route("/v1/metrics/<key>")
def get_metric(request: Request) -> Reply:
    return Reply(metrics.get_metric(request.params["key"]))


@APP.route("/v1/metrics/<key>/versions", ["POST"], body=MetricVersionDefinition, status=201)
def create_metric_version(request: Request) -> Reply:
    definition = validate(MetricVersionDefinition, request.json())
    return Reply(
        metrics.add_version(request.require_caller(), request.params["key"], definition), status=201
    )


@APP.route("/v1/metrics/<key>", ["DELETE"])
def archive_metric(request: Request) -> Reply:
    return Reply(metrics.archive_metric(request.require_caller(), request.params["key"]))


# -- price plans ------------------------------------------------------------------------


class NewPlan(PlanVersionDefinition):
    code: PlanCode


@APP.route("/v1/price-plans", ["POST"], body=NewPlan, status=201)
def create_plan(request: Request) -> Reply:
    body = validate(NewPlan, request.json())
    definition = PlanVersionDefinition.model_validate(body.model_dump(exclude={"code"}))
    return Reply(plans.create_plan(request.require_caller(), body.code, definition), status=201)


@APP.route("/v1/price-plans")
def list_plans(request: Request) -> Reply:
    return list_reply(*plans.list_plans(cursor=request.query("cursor"), limit=request.limit()))


@APP.route("/v1/price-plans/<code>")
def get_plan(request: Request) -> Reply:
    raw = request.query("version")
    if raw is not None and not (raw.isdigit() and 1 <= int(raw) <= 1_000_000):
        raise ValidationFailed(
            "version must be a whole number >= 1",
            errors=[FieldError(("query", "version"), "not a version number")],
        )
    return Reply(plans.get_plan(request.params["code"], int(raw) if raw else None))


@APP.route("/v1/price-plans/<code>/versions", ["POST"], body=PlanVersionDefinition, status=201)
def create_plan_version(request: Request) -> Reply:
    definition = validate(PlanVersionDefinition, request.json())
    return Reply(
        plans.add_version(request.require_caller(), request.params["code"], definition), status=201
    )


@APP.route("/v1/price-plans/<code>", ["DELETE"])
def archive_plan(request: Request) -> Reply:
    return Reply(plans.archive_plan(request.require_caller(), request.params["code"]))


# -- customers --------------------------------------------------------------------------


@APP.route("/v1/customers", ["POST"], body=NewCustomer, status=201)
def create_customer(request: Request) -> Reply:
    return Reply(
        customers.create_customer(request.require_caller(), validate(NewCustomer, request.json())),
        status=201,
    )


@APP.route("/v1/customers")
def list_customers(request: Request) -> Reply:
    return list_reply(
        *customers.list_customers(cursor=request.query("cursor"), limit=request.limit())
    )


@APP.route("/v1/customers/<customer_id>")
def get_customer(request: Request) -> Reply:
    return Reply(customers.get_customer(request.params["customer_id"]))


@APP.route("/v1/customers/<customer_id>", ["PATCH"], body=CustomerFields, status=200)
def change_customer(request: Request) -> Reply:
    fields = validate(CustomerFields, request.json())
    return Reply(
        customers.change_customer(request.require_caller(), request.params["customer_id"], fields)
    )


@APP.route("/v1/customers/<customer_id>", ["DELETE"])
def archive_customer(request: Request) -> Reply:
    return Reply(
        customers.archive_customer(request.require_caller(), request.params["customer_id"])
    )


# -- subscriptions ----------------------------------------------------------------------


@APP.route("/v1/subscriptions", ["POST"], body=NewSubscription, status=201)
def create_subscription(request: Request) -> Reply:
    body = validate(NewSubscription, request.json())
    return Reply(subscriptions.create_subscription(request.require_caller(), body), status=201)


@APP.route("/v1/subscriptions")
def list_subscriptions(request: Request) -> Reply:
    page = subscriptions.list_subscriptions(
        customer_id=request.query("customer_id"),
        cursor=request.query("cursor"),
        limit=request.limit(),
    )
    return list_reply(*page)


@APP.route("/v1/subscriptions/<subscription_id>")
def get_subscription(request: Request) -> Reply:
    return Reply(subscriptions.get_subscription(request.params["subscription_id"]))


@APP.route("/v1/subscriptions/<subscription_id>/cancel", ["POST"], body=Cancellation, status=200)
def cancel_subscription(request: Request) -> Reply:
    body = validate(Cancellation, request.json() if request.body.strip() else {})
    return Reply(
        subscriptions.cancel_subscription(
            request.require_caller(), request.params["subscription_id"], body
        )
    )


# -- dead letters -----------------------------------------------------------------------


@APP.route("/v1/dead-letters")
def list_dead_letters(request: Request) -> Reply:
    """CloudEvents the broker could not deliver, kept as received, with why."""
    page = dead_letters.list_dead_letters(
        ce_type=request.query("type"), cursor=request.query("cursor"), limit=request.limit()
    )
    return list_reply(*page)


# -- audit ------------------------------------------------------------------------------


@APP.route("/v1/audit")
def list_audit(request: Request) -> Reply:
    page = audit.list_entries(
        entity=request.query("entity"),
        entity_id=request.query("entity_id"),
        cursor=request.query("cursor"),
        limit=request.limit(),
    )
    return list_reply(*page)


@APP.route("/v1/dead-letters/<int:dead_letter_id>/redeliver", ["POST"], status=200)
def redeliver_dead_letter(request: Request) -> Reply:
    """Send a dead-lettered CloudEvent through the bus again, exactly as received (fix the
    cause first); the dead letter stays, with when it was re-sent."""
    return Reply(
        dead_letters.redeliver(request.require_caller(), int(request.params["dead_letter_id"]))
    )


# -- the overview and the console ---------------------------------------------------------


@APP.route("/v1/stats")
def get_stats(request: Request) -> Reply:
    """Events ingested, active subscriptions, period revenue and ingest p95 over a window
    (default: this UTC month) and the window of equal length before it (API.md §9)."""
    return Reply(stats.overview(start=request.instant("from"), end=request.instant("to")))


console.register(APP)


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    return APP(request)
