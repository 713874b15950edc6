"""Metric and metric version rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core.adapters.postgres.rows import as_dict, keyset_page
from core.adapters.postgres.tables import (
    closed_periods,
    metric_versions,
    metrics,
    plan_versions,
    subscriptions,
)


def lock(connection: Connection, key: str) -> dict[str, Any] | None:
    """The metric row, locked until the transaction ends (serializes new versions)."""
    row = connection.execute(
        select(metrics).where(metrics.c.key == key).with_for_update()
    ).one_or_none()
    return None if row is None else as_dict(row)


def get(connection: Connection, key: str) -> dict[str, Any] | None:
    row = connection.execute(select(metrics).where(metrics.c.key == key)).one_or_none()
    return None if row is None else as_dict(row)


def insert_metric(connection: Connection, key: str) -> bool:
    """False if the key exists already (keys are unique forever, archived or not)."""
    statement = pg_insert(metrics).values(key=key).on_conflict_do_nothing().returning(metrics.c.key)
    return connection.execute(statement).scalar_one_or_none() is not None


def insert_version(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(insert(metric_versions).values(values))


def versions(connection: Connection, keys: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows = connection.execute(
        select(metric_versions)
        .where(metric_versions.c.metric_key.in_(keys))
        .order_by(metric_versions.c.metric_key, metric_versions.c.version)
    ).all()
    found: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for row in rows:
        found[row.metric_key].append(as_dict(row))
    return found


def page(connection: Connection, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    return keyset_page(connection, select(metrics), metrics.c.key, after=after, limit=limit)


def archive(connection: Connection, key: str, at: datetime) -> None:
    connection.execute(
        update(metrics)
        .where(metrics.c.key == key, metrics.c.archived_at.is_(None))
        .values(archived_at=at)
    )


def closed_until(connection: Connection, key: str) -> datetime | None:
    """The latest end of an invoiced period of any subscription whose plan bills `key`."""
    billed = plan_versions.c.charges.contains([{"metric_key": key}])
    query = (
        select(func.max(closed_periods.c.period_end))
        .select_from(
            closed_periods.join(
                subscriptions, subscriptions.c.id == closed_periods.c.subscription_id
            ).join(
                plan_versions,
                (plan_versions.c.plan_code == subscriptions.c.plan_code)
                & (plan_versions.c.version == subscriptions.c.plan_version),
            )
        )
        .where(billed)
    )
    return connection.execute(query).scalar_one_or_none()
