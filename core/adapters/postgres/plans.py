"""Price plan and plan version rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import plan_versions, price_plans


def lock(connection: Connection, code: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(price_plans).where(price_plans.c.code == code).with_for_update()
    ).one_or_none()
    return None if row is None else as_dict(row)


def get(connection: Connection, code: str) -> dict[str, Any] | None:
    row = connection.execute(select(price_plans).where(price_plans.c.code == code)).one_or_none()
    return None if row is None else as_dict(row)


def insert_plan(connection: Connection, code: str) -> bool:
    statement = (
        pg_insert(price_plans)
        .values(code=code)
        .on_conflict_do_nothing()
        .returning(price_plans.c.code)
    )
    return connection.execute(statement).scalar_one_or_none() is not None


def insert_version(connection: Connection, values: dict[str, Any]) -> dict[str, Any]:
    return as_dict(
        connection.execute(insert(plan_versions).values(values).returning(*plan_versions.c)).one()
    )


def latest_version_number(connection: Connection, code: str) -> int:
    query = select(func.coalesce(func.max(plan_versions.c.version), 0)).where(
        plan_versions.c.plan_code == code
    )
    return int(connection.execute(query).scalar_one())


def version(connection: Connection, code: str, number: int) -> dict[str, Any] | None:
    row = connection.execute(
        select(plan_versions).where(
            plan_versions.c.plan_code == code, plan_versions.c.version == number
        )
    ).one_or_none()
    return None if row is None else as_dict(row)


def version_numbers(connection: Connection, code: str) -> list[int]:
    query = (
        select(plan_versions.c.version)
        .where(plan_versions.c.plan_code == code)
        .order_by(plan_versions.c.version)
    )
    return [int(v) for v in connection.execute(query).scalars().all()]


def page(connection: Connection, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    return keyset_page(
        connection, select(price_plans), price_plans.c.code, after=after, limit=limit
    )


def archive(connection: Connection, code: str, at: datetime) -> None:
    connection.execute(
        update(price_plans)
        .where(price_plans.c.code == code, price_plans.c.archived_at.is_(None))
        .values(archived_at=at)
    )
