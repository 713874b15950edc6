"""Subscriptions: a customer bound to one plan version (locked at creation), billed in
periods anchored at starts_at, with per-subscription overrides of charge fields."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import plans as plan_rows
from core.adapters.postgres import subscriptions as rows
from core.adapters.postgres.database import get_database
from core.domain.customers import Cancellation, NewSubscription
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.periods import Interval, Period, period_containing
from core.domain.pricing.charges import CHARGE_ADAPTER, OverrideError, apply_overrides
from core.services import audit
from core.services.caller import Caller
from core.services.listing import paginate


def status(row: dict[str, Any], now: datetime) -> str:
    if now < row["starts_at"]:
        return "scheduled"
    if row["ends_at"] is not None and now >= row["ends_at"]:
        return "ended"
    return "active"


def current_period(row: dict[str, Any], interval: Interval, now: datetime) -> Period | None:
    """The billing period containing `now` (the first one before the start), cut at ends_at."""
    instant = max(now, row["starts_at"])
    if row["ends_at"] is not None and instant >= row["ends_at"]:
        return None
    period = period_containing(row["starts_at"], interval, instant)
    if row["ends_at"] is not None and row["ends_at"] < period.end:
        return Period(period.start, row["ends_at"])
    return period


def view(row: dict[str, Any], interval: str, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    period = current_period(row, Interval(interval), now)
    return {
        "id": row["id"],
        "customer_id": row["customer_id"],
        "plan_code": row["plan_code"],
        "plan_version": row["plan_version"],
        "interval": interval,
        "status": status(row, now),
        "starts_at": row["starts_at"],
        "ends_at": row["ends_at"],
        "canceled_at": row["canceled_at"],
        "current_period": None if period is None else {"start": period.start, "end": period.end},
        "overrides": row["overrides"],
        "created_at": row["created_at"],
    }


def _effective_charges(plan_version: dict[str, Any], overrides: list[dict[str, Any]]) -> list[Any]:
    charges = [CHARGE_ADAPTER.validate_python(c) for c in plan_version["charges"]]
    try:
        return apply_overrides(charges, overrides)
    except OverrideError as error:
        raise ValidationFailed(
            str(error),
            code="invalid_override",
            errors=[FieldError(("body", "overrides", error.index), str(error))],
        ) from error


def create_subscription(caller: Caller, body: NewSubscription) -> dict[str, Any]:
    with get_database().transaction() as connection:
        customer = customer_rows.get(connection, body.customer_id)
        if customer is None or customer["archived_at"] is not None:
            raise ValidationFailed(
                f"no active customer {body.customer_id!r}",
                code="unknown_customer",
                errors=[FieldError(("body", "customer_id"), "unknown or archived customer")],
            )
        plan = plan_rows.get(connection, body.plan_code)
        if plan is None or plan["archived_at"] is not None:
            raise ValidationFailed(
                f"no active price plan {body.plan_code!r}",
                code="unknown_plan",
                errors=[FieldError(("body", "plan_code"), "unknown or archived plan")],
            )
        number = body.plan_version or plan_rows.latest_version_number(connection, body.plan_code)
        version = plan_rows.version(connection, body.plan_code, number)
        if version is None:
            raise ValidationFailed(
                f"price plan {body.plan_code!r} has no version {number}",
                code="unknown_plan_version",
                errors=[FieldError(("body", "plan_version"), "no such version")],
            )
        if version["currency"] != customer["currency"]:
            raise ValidationFailed(
                f"plan bills in {version['currency']}, customer pays in {customer['currency']}",
                code="currency_mismatch",
                errors=[FieldError(("body", "plan_code"), "currency differs from the customer's")],
            )
        overrides = body.override_dicts()
        _effective_charges(version, overrides)
        row = rows.insert_subscription(
            connection,
            {
                "id": "sub_" + secrets.token_hex(12),
                "customer_id": body.customer_id,
                "plan_code": body.plan_code,
                "plan_version": number,
                "starts_at": body.starts_at or datetime.now(UTC),
                "overrides": overrides,
            },
        )
        result = view(row, version["interval"])
        audit.record(
            connection,
            caller,
            action="subscription.created",
            entity="subscription",
            entity_id=row["id"],
            state=row,
        )
    return result


def cancel_subscription(
    caller: Caller, subscription_id: str, cancellation: Cancellation
) -> dict[str, Any]:
    now = datetime.now(UTC)
    with get_database().transaction() as connection:
        row = rows.get(connection, subscription_id, lock=True)
        if row is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        interval = _interval(connection, row)
        if row["canceled_at"] is not None or status(row, now) == "ended":
            raise Conflict(
                f"subscription {subscription_id} is already canceled or ended",
                code="already_canceled",
            )
        if cancellation.at == "period_end":
            period = current_period(row, Interval(interval), now)
            assert period is not None
            ends_at = period.end
        else:
            ends_at = cancellation.at
            if ends_at < now or ends_at <= row["starts_at"]:
                raise ValidationFailed(
                    "cancel at an instant in the future, after the start",
                    code="invalid_cancellation",
                    errors=[FieldError(("body", "at"), "in the past or before starts_at")],
                )
        after = rows.change(connection, subscription_id, {"ends_at": ends_at, "canceled_at": now})
        audit.record(
            connection,
            caller,
            action="subscription.canceled",
            entity="subscription",
            entity_id=subscription_id,
            state=after,
            changes={"ends_at": {"before": row["ends_at"], "after": ends_at}},
        )
        return view(after, interval, now)


def get_subscription(subscription_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = rows.get(connection, subscription_id)
        if row is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        return view(row, _interval(connection, row))


def list_subscriptions(
    *, customer_id: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(connection, customer_id=customer_id, after=after, limit=n),
            cursor=cursor,
            limit=limit,
            key="id",
        )
        return [view(row, _interval(connection, row)) for row in page], next_cursor


def _interval(connection: Any, row: dict[str, Any]) -> str:
    version = plan_rows.version(connection, row["plan_code"], row["plan_version"])
    assert version is not None  # a foreign key guarantees it
    return str(version["interval"])
