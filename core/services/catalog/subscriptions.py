"""Subscriptions: a customer bound to one plan version (locked at creation), billed in
periods anchored at starts_at, with per-subscription overrides of charge fields."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from core.adapters.postgres import customers as customer_rows
from core.adapters.postgres import discounts as discount_rows
from core.adapters.postgres import plans as plan_rows
from core.adapters.postgres import subscriptions as rows
from core.adapters.postgres.database import get_database
from core.domain import event_types
from core.domain.customers import Cancellation, NewSubscription, PlanChange
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.periods import Interval, Period, period_containing
from core.domain.pricing.charges import CHARGE_ADAPTER, OverrideError, apply_overrides
from core.domain.pricing.terms import effective_terms
from core.services import audit, notify
from core.services.caller import Caller
from core.services.listing import paginate

EXCLUSION_VIOLATION = "23P01"


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
    period = period_containing(row["anchor_at"], interval, instant)
    if row["ends_at"] is not None and row["ends_at"] < period.end:
        return Period(period.start, row["ends_at"])
    return period


def view(
    row: dict[str, Any], version: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """The subscription as the API shows it; its terms are those in force (its own
    overrides, else its plan version's)."""
    now = now or datetime.now(UTC)
    interval = version["interval"]
    period = current_period(row, Interval(interval), now)
    terms = {**version["terms"], **row["terms"]}
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
        "trial_days": terms.get("trial_days"),
        "trial_ends_at": row["trial_ends_at"],
        "minimum_commitment": terms.get("minimum_commitment"),
        "maximum_charge": terms.get("maximum_charge"),
        "previous_subscription_id": row["previous_subscription_id"],
        "changed_at": row["changed_at"],
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


def _plan_version(
    connection: Any, customer: dict[str, Any], plan_code: str, plan_version: int | None
) -> dict[str, Any]:
    """The active plan's version a subscription of the customer may bind (the latest when
    none is named), or 422 naming what is wrong."""
    plan = plan_rows.get(connection, plan_code)
    if plan is None or plan["archived_at"] is not None:
        raise ValidationFailed(
            f"no active price plan {plan_code!r}",
            code="unknown_plan",
            errors=[FieldError(("body", "plan_code"), "unknown or archived plan")],
        )
    number = plan_version or plan_rows.latest_version_number(connection, plan_code)
    version = plan_rows.version(connection, plan_code, number)
    if version is None:
        raise ValidationFailed(
            f"price plan {plan_code!r} has no version {number}",
            code="unknown_plan_version",
            errors=[FieldError(("body", "plan_version"), "no such version")],
        )
    if version["currency"] != customer["currency"]:
        raise ValidationFailed(
            f"plan bills in {version['currency']}, customer pays in {customer['currency']}",
            code="currency_mismatch",
            errors=[FieldError(("body", "plan_code"), "currency differs from the customer's")],
        )
    return version


def _checked_terms(version: dict[str, Any], terms: dict[str, Any]) -> dict[str, Any]:
    try:
        effective_terms(version["terms"], terms)
    except ValueError as error:
        raise ValidationFailed(
            str(error),
            code="invalid_terms",
            errors=[FieldError(("body", "maximum_charge"), str(error))],
        ) from error
    return terms


def _trial_end(
    version: dict[str, Any], terms: dict[str, Any], starts_at: datetime
) -> datetime | None:
    days = terms.get("trial_days", version["terms"].get("trial_days"))
    return starts_at + timedelta(days=days) if days else None


def _insert(connection: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Insert a subscription; the database refuses one that would charge a metric the
    customer is already charged for over overlapping time (an exclusion constraint)."""
    try:
        with connection.begin_nested():
            return rows.insert_subscription(connection, values)
    except IntegrityError as error:
        if getattr(error.orig, "sqlstate", None) != EXCLUSION_VIOLATION:
            raise
        raise Conflict(
            "the customer already has a subscription charging one of this plan's metrics "
            "over overlapping time; end or change that subscription first",
            code="overlapping_subscription",
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
        version = _plan_version(connection, customer, body.plan_code, body.plan_version)
        overrides = body.override_dicts()
        _effective_charges(version, overrides)
        terms = _checked_terms(version, body.terms())
        starts_at = body.starts_at or datetime.now(UTC)
        row = _insert(
            connection,
            {
                "id": "sub_" + secrets.token_hex(12),
                "customer_id": body.customer_id,
                "plan_code": body.plan_code,
                "plan_version": version["version"],
                "starts_at": starts_at,
                "anchor_at": starts_at,
                "overrides": overrides,
                "terms": terms,
                "trial_ends_at": _trial_end(version, terms, starts_at),
            },
        )
        result = view(row, version)
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
        version = _version(connection, row)
        interval = version["interval"]
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
        return view(after, version, now)


def change_subscription(caller: Caller, subscription_id: str, body: PlanChange) -> dict[str, Any]:
    """A plan change as one audited operation: the subscription ends at the change instant
    (`changed_at` says a change ended it) and a new one on the new plan version starts
    there, with `previous_subscription_id` and the same billing anchor, so the period the
    change falls in is billed on each side for its own part (split by event time, flat fees
    and commitments prorated by days). The new subscription takes over the old one's
    discounts. `subscription.changed` is announced once the change has committed."""
    now = datetime.now(UTC)
    with get_database().transaction() as connection:
        old = rows.get(connection, subscription_id, lock=True)
        if old is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        interval = _version(connection, old)["interval"]
        if old["canceled_at"] is not None or old["changed_at"] is not None:
            raise Conflict(
                f"subscription {subscription_id} is canceled or already changed; "
                "change the subscription that replaced it",
                code="already_canceled",
            )
        if status(old, now) == "ended":
            raise Conflict(f"subscription {subscription_id} has ended", code="already_canceled")
        instant = _change_instant(old, Interval(interval), body, now)
        customer = customer_rows.get(connection, old["customer_id"])
        assert customer is not None  # a foreign key guarantees it
        version = _plan_version(connection, customer, body.plan_code, body.plan_version)
        overrides = body.override_dicts()
        _effective_charges(version, overrides)
        terms = _checked_terms(version, body.terms())
        ended = rows.change(connection, subscription_id, {"ends_at": instant, "changed_at": now})
        new = _insert(
            connection,
            {
                "id": "sub_" + secrets.token_hex(12),
                "customer_id": old["customer_id"],
                "plan_code": body.plan_code,
                "plan_version": version["version"],
                "starts_at": instant,
                "anchor_at": old["anchor_at"],
                "overrides": overrides,
                "terms": terms,
                "trial_ends_at": _trial_end(version, terms, instant),
                "previous_subscription_id": subscription_id,
            },
        )
        carried = discount_rows.carry_over(connection, subscription_id, new["id"], instant)
        result = view(new, version, now)
        audit.record(
            connection,
            caller,
            action="subscription.changed",
            entity="subscription",
            entity_id=subscription_id,
            state={"ended": ended, "started": new, "discounts_carried": carried},
            changes={
                "ends_at": {"before": old["ends_at"], "after": instant},
                "plan": {
                    "before": f"{old['plan_code']} v{old['plan_version']}",
                    "after": f"{new['plan_code']} v{new['plan_version']}",
                },
            },
        )
        notify.emit_after_commit(
            event_types.SUBSCRIPTION_CHANGED,
            {
                "subscription_id": new["id"],
                "previous_subscription_id": subscription_id,
                "customer_id": new["customer_id"],
                "plan_code": new["plan_code"],
                "plan_version": new["plan_version"],
                "previous_plan_code": old["plan_code"],
                "previous_plan_version": old["plan_version"],
                "effective_at": instant.isoformat(),
            },
            event_id=f"subscription-changed-{subscription_id}",
        )
    return result


def _change_instant(
    old: dict[str, Any], interval: Interval, body: PlanChange, now: datetime
) -> datetime:
    if body.effective == "immediately":
        instant = max(now, old["starts_at"])
    elif body.effective == "period_end":
        period = current_period(old, interval, now)
        assert period is not None  # not ended: checked before
        instant = period.end
    else:
        instant = body.effective
        if instant < now:
            raise ValidationFailed(
                "a plan change takes effect now or later, never in the past",
                code="invalid_change",
                errors=[FieldError(("body", "effective"), "in the past")],
            )
    if instant <= old["starts_at"] or (old["ends_at"] is not None and instant >= old["ends_at"]):
        raise ValidationFailed(
            "the change instant must fall inside the subscription's time: after it starts "
            "and before it ends",
            code="invalid_change",
            errors=[FieldError(("body", "effective"), "outside the subscription's time")],
        )
    return instant


def get_subscription(subscription_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = rows.get(connection, subscription_id)
        if row is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        return view(row, _version(connection, row))


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
        return [view(row, _version(connection, row)) for row in page], next_cursor


def _version(connection: Any, row: dict[str, Any]) -> dict[str, Any]:
    version = plan_rows.version(connection, row["plan_code"], row["plan_version"])
    assert version is not None  # a foreign key guarantees it
    return version
