"""The `api` function: API keys now; the catalog (metrics, plans, customers, subscriptions)."""

from __future__ import annotations

from typing import Annotated, Literal

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from core.services import api_keys
from functions.http import FunctionApp, Reply, Request, list_reply, validate

APP = FunctionApp("api")


class CreateApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: Annotated[
        list[Literal["events:write", "read", "admin"]], Field(min_length=1, max_length=3)
    ]


@APP.route("/v1/api-keys", ["POST"])
def create_api_key(request: Request) -> Reply:
    body = validate(CreateApiKey, request.json())
    created = api_keys.create_key(request.require_caller(), name=body.name, scopes=body.scopes)
    return Reply({**created.key, "secret": created.secret}, status=201)


@APP.route("/v1/api-keys")
def list_api_keys(request: Request) -> Reply:
    data, next_cursor = api_keys.list_keys(cursor=request.query("cursor"), limit=request.limit())
    return list_reply(data, next_cursor)


@APP.route("/v1/api-keys/<key_id>", ["DELETE"])
def revoke_api_key(request: Request) -> Reply:
    return Reply(api_keys.revoke_key(request.require_caller(), request.params["key_id"]))


CATALOG_ISSUE = "issue #3, catalog"
for rule, methods in (
    ("/v1/metrics", ["GET", "POST"]),
    ("/v1/metrics/<key>", ["GET", "DELETE"]),
    ("/v1/metrics/<key>/versions", ["POST"]),
    ("/v1/price-plans", ["GET", "POST"]),
    ("/v1/price-plans/<code>", ["GET", "DELETE"]),
    ("/v1/price-plans/<code>/versions", ["POST"]),
    ("/v1/customers", ["GET", "POST"]),
    ("/v1/customers/<customer_id>", ["GET", "PATCH", "DELETE"]),
    ("/v1/subscriptions", ["GET", "POST"]),
    ("/v1/subscriptions/<subscription_id>", ["GET"]),
    ("/v1/subscriptions/<subscription_id>/cancel", ["POST"]),
    ("/v1/audit", ["GET"]),
    ("/v1/stats", ["GET"]),
    ("/dashboard", ["GET"]),
):
    APP.not_implemented(rule, methods, CATALOG_ISSUE)


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    return APP(request)
