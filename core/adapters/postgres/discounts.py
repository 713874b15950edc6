"""Coupons and the discounts redeemed from them."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import coupons, discounts

CHECK_VIOLATION = "23514"


class LimitReached(Exception):
    """The coupon's `max_redemptions` would be exceeded (its CHECK refused the count)."""


def insert_coupon(connection: Connection, values: dict[str, Any]) -> dict[str, Any] | None:
    """The new coupon, or None when the code exists (codes are never reused)."""
    statement = (
        pg_insert(coupons)
        .values(values)
        .on_conflict_do_nothing(index_elements=[coupons.c.code])
        .returning(*coupons.c)
    )
    row = connection.execute(statement).one_or_none()
    return None if row is None else as_dict(row)


def get_coupon(connection: Connection, code: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(coupons).where(coupons.c.code == code)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).one_or_none()
    return None if row is None else as_dict(row)


def archive_coupon(connection: Connection, code: str, at: datetime) -> None:
    connection.execute(update(coupons).where(coupons.c.code == code).values(archived_at=at))


def coupon_page(connection: Connection, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    return keyset_page(connection, select(coupons), coupons.c.code, after=after, limit=limit)


def count_redemption(connection: Connection, code: str) -> dict[str, Any]:
    """Count one redemption of the coupon; the database refuses one beyond the limit
    (`CHECK (redeemed <= max_redemptions)`), also between concurrent redemptions: the
    UPDATE of one row serialises them."""
    statement = (
        update(coupons)
        .where(coupons.c.code == code)
        .values(redeemed=coupons.c.redeemed + 1)
        .returning(*coupons.c)
    )
    try:
        with connection.begin_nested():
            return as_dict(connection.execute(statement).one())
    except IntegrityError as error:
        if getattr(error.orig, "sqlstate", None) == CHECK_VIOLATION:
            raise LimitReached(code) from error
        raise


def insert_discount(connection: Connection, values: dict[str, Any]) -> dict[str, Any] | None:
    """The new discount, or None when the subscription already has this coupon."""
    statement = (
        pg_insert(discounts)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=[discounts.c.subscription_id, discounts.c.coupon_code]
        )
        .returning(*discounts.c)
    )
    row = connection.execute(statement).one_or_none()
    return None if row is None else as_dict(row)


def discount(connection: Connection, discount_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(discounts).where(discounts.c.id == discount_id)).one_or_none()
    return None if row is None else as_dict(row)


def remove(connection: Connection, discount_id: str, at: datetime) -> dict[str, Any]:
    statement = (
        update(discounts)
        .where(discounts.c.id == discount_id)
        .values(removed_at=at)
        .returning(*discounts.c)
    )
    return as_dict(connection.execute(statement).one())


def of_subscription(connection: Connection, subscription_id: str) -> list[dict[str, Any]]:
    """The subscription's discounts with their coupons' terms, in redemption order."""
    query = (
        select(
            discounts,
            coupons.c.name,
            coupons.c.percent_off,
            coupons.c.amount_off,
            coupons.c.currency,
            coupons.c.duration,
            coupons.c.duration_periods,
            coupons.c.metric_keys,
        )
        .join(coupons, coupons.c.code == discounts.c.coupon_code)
        .where(discounts.c.subscription_id == subscription_id)
        .order_by(discounts.c.created_at, discounts.c.id)
    )
    return [as_dict(row) for row in connection.execute(query)]


def carry_over(
    connection: Connection, old_subscription_id: str, new_subscription_id: str, at: datetime
) -> list[str]:
    """A plan change: the new subscription takes the old one's discounts (not removed),
    same coupon and first period — no new redemption is counted."""
    carried = []
    for found in of_subscription(connection, old_subscription_id):
        if found["removed_at"] is not None:
            continue
        new_id = "dsc_" + secrets.token_hex(12)
        connection.execute(
            insert(discounts).values(
                id=new_id,
                subscription_id=new_subscription_id,
                coupon_code=found["coupon_code"],
                first_period_start=found["first_period_start"],
                carried_from=found["id"],
                created_at=found["created_at"],
            )
        )
        carried.append(new_id)
    return carried
