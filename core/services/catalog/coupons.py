"""Coupons and discounts (API.md §12): a coupon is redeemed on a subscription as a
discount, which invoice assembly applies to the periods it is in force for
(core/domain/invoices/discounts.py)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres import discounts as rows
from core.adapters.postgres import plans as plan_rows
from core.adapters.postgres import subscriptions as subscription_rows
from core.adapters.postgres.database import get_database
from core.domain.canonical import decimal_text
from core.domain.coupons import NewCoupon, Redemption, coupon_view, periods_of
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.invoices.discounts import AppliedDiscount
from core.domain.periods import Interval, period_index
from core.services import audit
from core.services.caller import Caller
from core.services.catalog.archiving import archive
from core.services.catalog.metrics import check_usable
from core.services.catalog.subscriptions import current_period, status
from core.services.listing import paginate


def create_coupon(caller: Caller, body: NewCoupon) -> dict[str, Any]:
    with get_database().transaction() as connection:
        if body.applies_to is not None:
            check_usable(
                connection,
                [
                    (("body", "applies_to", "metric_keys", index), key)
                    for index, key in enumerate(body.applies_to.metric_keys)
                ],
            )
        row = rows.insert_coupon(connection, body.row() | {"created_at": datetime.now(UTC)})
        if row is None:
            raise Conflict(
                f"coupon {body.code!r} exists (codes are never reused)", code="coupon_exists"
            )
        result = coupon_view(row)
        audit.record(
            connection,
            caller,
            action="coupon.created",
            entity="coupon",
            entity_id=body.code,
            state=result,
        )
    return result


def get_coupon(code: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        return _coupon(connection, code)


def _coupon(connection: Connection, code: str) -> dict[str, Any]:
    row = rows.get_coupon(connection, code)
    if row is None:
        raise NotFound(f"no coupon {code!r}")
    return coupon_view(row)


def list_coupons(*, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.coupon_page(connection, after=after, limit=n),
            cursor=cursor,
            limit=limit,
            key="code",
        )
        return [coupon_view(row) for row in page], next_cursor


def archive_coupon(caller: Caller, code: str) -> dict[str, Any]:
    """Archiving stops new redemptions only: discounts already redeemed go on."""
    return archive(
        caller,
        entity="coupon",
        entity_id=code,
        lock=lambda connection: rows.get_coupon(connection, code, lock=True),
        mark=lambda connection, at: rows.archive_coupon(connection, code, at),
        load=lambda connection: _coupon(connection, code),
    )


def redeem(caller: Caller, subscription_id: str, body: Redemption) -> dict[str, Any]:
    """Redeem a coupon on a subscription: the discount applies from the subscription's
    current period (its first, when it has not started). The redemption is counted in the
    same transaction; the database refuses a count beyond `max_redemptions`."""
    now = datetime.now(UTC)
    with get_database().transaction() as connection:
        subscription = subscription_rows.get(connection, subscription_id, lock=True)
        if subscription is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        version = plan_rows.version(
            connection, subscription["plan_code"], subscription["plan_version"]
        )
        assert version is not None  # a foreign key guarantees it
        interval = Interval(version["interval"])
        if status(subscription, now) == "ended":
            raise Conflict(f"subscription {subscription_id} has ended", code="subscription_ended")
        coupon = rows.get_coupon(connection, body.coupon_code)
        if coupon is None:
            raise ValidationFailed(
                f"no coupon {body.coupon_code!r}",
                code="unknown_coupon",
                errors=[FieldError(("body", "coupon_code"), "no such coupon")],
            )
        _check_redeemable(coupon, version, now)
        period = current_period(subscription, interval, now)
        assert period is not None  # not ended: checked above
        discount = rows.insert_discount(
            connection,
            {
                "id": "dsc_" + secrets.token_hex(12),
                "subscription_id": subscription_id,
                "coupon_code": coupon["code"],
                "first_period_start": period.start,
                "created_at": now,
            },
        )
        if discount is None:
            raise Conflict(
                f"subscription {subscription_id} already has coupon {coupon['code']!r}",
                code="already_redeemed",
            )
        try:
            counted = rows.count_redemption(connection, coupon["code"])
        except rows.LimitReached as error:
            raise Conflict(
                f"coupon {coupon['code']!r} has reached its {coupon['max_redemptions']} "
                "redemptions",
                code="coupon_exhausted",
            ) from error
        result = discount_view(discount | _terms(counted), subscription, interval)
        audit.record(
            connection,
            caller,
            action="discount.created",
            entity="subscription",
            entity_id=subscription_id,
            state=result,
        )
    return result


def _check_redeemable(coupon: dict[str, Any], version: dict[str, Any], now: datetime) -> None:
    code = coupon["code"]
    if coupon["archived_at"] is not None:
        raise Conflict(f"coupon {code!r} is archived", code="coupon_archived")
    if coupon["redeem_by"] is not None and now >= coupon["redeem_by"]:
        raise Conflict(
            f"coupon {code!r} could be redeemed until {coupon['redeem_by'].isoformat()}",
            code="coupon_expired",
        )
    if coupon["currency"] is not None and coupon["currency"] != version["currency"]:
        raise ValidationFailed(
            f"coupon {code!r} is in {coupon['currency']}; the subscription bills in "
            f"{version['currency']}",
            code="currency_mismatch",
            errors=[FieldError(("body", "coupon_code"), "another currency")],
        )
    if coupon["metric_keys"] is not None:
        charged = {c.get("metric_key") for c in version["charges"]}
        if not charged & set(coupon["metric_keys"]):
            raise ValidationFailed(
                f"coupon {code!r} applies to {sorted(coupon['metric_keys'])}, none of which "
                "the subscription's plan charges",
                code="coupon_not_applicable",
                errors=[FieldError(("body", "coupon_code"), "no metric in common")],
            )


def _terms(coupon: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "percent_off", "amount_off", "currency", "duration", "duration_periods")
    return {key: coupon[key] for key in keys} | {"metric_keys": coupon["metric_keys"]}


def remove_discount(caller: Caller, subscription_id: str, discount_id: str) -> dict[str, Any]:
    """End a discount: it applies to no period starting after now (kept, marked removed)."""
    now = datetime.now(UTC)
    with get_database().transaction() as connection:
        subscription = subscription_rows.get(connection, subscription_id, lock=True)
        found = rows.discount(connection, discount_id)
        if subscription is None or found is None or found["subscription_id"] != subscription_id:
            raise NotFound(f"no discount {discount_id!r} on subscription {subscription_id!r}")
        interval = _interval(connection, subscription)
        if found["removed_at"] is None:
            rows.remove(connection, discount_id, now)
        current = next(
            d for d in rows.of_subscription(connection, subscription_id) if d["id"] == discount_id
        )
        result = discount_view(current, subscription, interval)
        if found["removed_at"] is None:
            audit.record(
                connection,
                caller,
                action="discount.removed",
                entity="subscription",
                entity_id=subscription_id,
                state=result,
            )
    return result


def list_discounts(subscription_id: str) -> list[dict[str, Any]]:
    with get_database().transaction() as connection:
        subscription = subscription_rows.get(connection, subscription_id)
        if subscription is None:
            raise NotFound(f"no subscription {subscription_id!r}")
        interval = _interval(connection, subscription)
        return [
            discount_view(row, subscription, interval)
            for row in rows.of_subscription(connection, subscription_id)
        ]


def _interval(connection: Connection, subscription: dict[str, Any]) -> Interval:
    version = plan_rows.version(connection, subscription["plan_code"], subscription["plan_version"])
    assert version is not None  # a foreign key guarantees it
    return Interval(version["interval"])


def discount_view(
    row: dict[str, Any], subscription: dict[str, Any], interval: Interval
) -> dict[str, Any]:
    periods = periods_of(row["duration"], row["duration_periods"])
    return {
        "id": row["id"],
        "subscription_id": row["subscription_id"],
        "coupon_code": row["coupon_code"],
        "name": row["name"],
        "percent_off": None if row["percent_off"] is None else decimal_text(row["percent_off"]),
        "amount_off": None if row["amount_off"] is None else decimal_text(row["amount_off"]),
        "currency": row["currency"],
        "applies_to": None
        if row["metric_keys"] is None
        else {"metric_keys": list(row["metric_keys"])},
        "duration": row["duration"],
        "periods": periods,
        "first_period_start": row["first_period_start"],
        "carried_from": row["carried_from"],
        "created_at": row["created_at"],
        "removed_at": row["removed_at"],
    }


def in_force(
    connection: Connection, subscription: dict[str, Any], interval: Interval, period_start: datetime
) -> tuple[AppliedDiscount, ...]:
    """The subscription's discounts that apply to the billing period starting at
    `period_start`, in redemption order: from the period of redemption for `periods`
    periods (`once`: 1; `forever`: all), unless removed before the period started."""
    anchor = subscription["anchor_at"]
    if period_start < anchor:
        return ()
    index = period_index(anchor, interval, period_start)
    found = []
    for row in rows.of_subscription(connection, subscription["id"]):
        if row["removed_at"] is not None and row["removed_at"] <= period_start:
            continue
        first = period_index(anchor, interval, max(row["first_period_start"], anchor))
        periods = periods_of(row["duration"], row["duration_periods"])
        if index < first or (periods is not None and index >= first + periods):
            continue
        found.append(
            AppliedDiscount(
                id=row["id"],
                coupon_code=row["coupon_code"],
                name=row["name"],
                percent_off=row["percent_off"],
                amount_off=row["amount_off"],
                metric_keys=None if row["metric_keys"] is None else tuple(row["metric_keys"]),
            )
        )
    return tuple(found)


def discounts_of_invoice(
    connection: Connection, invoice: dict[str, Any]
) -> tuple[AppliedDiscount, ...]:
    """The discounts a subscription invoice applies: in force for its period and, once it
    is issued, redeemed before it was (a coupon redeemed later does not reach back)."""
    subscription = subscription_rows.get(connection, invoice["subscription_id"])
    assert subscription is not None  # invoices reference subscriptions
    found = in_force(
        connection, subscription, _interval(connection, subscription), invoice["period_start"]
    )
    issued = invoice.get("issued_at")
    if issued is None:
        return found
    redeemed = {
        row["id"]
        for row in rows.of_subscription(connection, subscription["id"])
        if row["created_at"] <= issued
    }
    return tuple(d for d in found if d.id in redeemed)
