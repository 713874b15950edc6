"""The overview's small tables: accepted events per minute of receipt, ingest request
latencies per minute and bucket; and the small-table counts the overview adds to them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from core.domain.invoices.status import BINDING


def count_folded_jobs(connection: Connection, job_ids: Sequence[int]) -> None:
    """In the fold's transaction: the accepted events of these ingestion jobs, by the
    minute they were received (each job's own commit time; folded once, counted once)."""
    connection.exec_driver_sql(
        "INSERT INTO ingest_minutes (minute, events) "
        "SELECT date_trunc('minute', created_at), sum((payload->>'events')::bigint) "
        "FROM jobs WHERE id = ANY(%(jobs)s) GROUP BY 1 ORDER BY 1 "
        "ON CONFLICT (minute) DO UPDATE SET events = ingest_minutes.events + excluded.events",
        {"jobs": list(job_ids)},
    )


def add_latencies(connection: Connection, counts: Mapping[tuple[datetime, int], int]) -> None:
    if not counts:
        return
    keys = sorted(counts)
    connection.exec_driver_sql(
        "INSERT INTO ingest_latency (minute, bucket_ms, requests) "
        "SELECT * FROM unnest(%(minutes)s::timestamptz[], %(buckets)s::int[], %(counts)s::bigint[]) "
        "ON CONFLICT (minute, bucket_ms) DO UPDATE "
        "SET requests = ingest_latency.requests + excluded.requests",
        {
            "minutes": [minute for minute, _ in keys],
            "buckets": [bucket for _, bucket in keys],
            "counts": [counts[key] for key in keys],
        },
    )


def events_received(connection: Connection, start: datetime, end: datetime) -> int:
    return int(
        connection.exec_driver_sql(
            "SELECT coalesce(sum(events), 0) FROM ingest_minutes "
            "WHERE minute >= %(s)s AND minute < %(e)s",
            {"s": start, "e": end},
        ).scalar_one()
    )


def events_per_day(
    connection: Connection, start: datetime, end: datetime
) -> list[tuple[datetime, int]]:
    rows = connection.exec_driver_sql(
        "SELECT date_trunc('day', minute), sum(events) FROM ingest_minutes "
        "WHERE minute >= %(s)s AND minute < %(e)s GROUP BY 1 ORDER BY 1",
        {"s": start, "e": end},
    )
    return [(day, int(events)) for day, events in rows]


def latencies(connection: Connection, start: datetime, end: datetime) -> dict[int, int]:
    rows = connection.exec_driver_sql(
        "SELECT bucket_ms, sum(requests) FROM ingest_latency "
        "WHERE minute >= %(s)s AND minute < %(e)s GROUP BY 1",
        {"s": start, "e": end},
    )
    return {int(bucket): int(count) for bucket, count in rows}


def active_subscriptions(connection: Connection, at: datetime) -> int:
    return int(
        connection.exec_driver_sql(
            "SELECT count(*) FROM subscriptions WHERE starts_at <= %(t)s "
            "AND (ends_at IS NULL OR ends_at > %(t)s)",
            {"t": at},
        ).scalar_one()
    )


def revenue(connection: Connection, start: datetime, end: datetime) -> dict[str, Decimal]:
    """Per currency: invoices (binding and drafts) whose period starts in the window."""
    rows = connection.exec_driver_sql(
        "SELECT currency, sum(total) FROM invoices WHERE period_start >= %(s)s "
        "AND period_start < %(e)s AND (status = ANY(%(binding)s) OR status = 'draft') "
        "GROUP BY 1 ORDER BY 1",
        {"s": start, "e": end, "binding": list(BINDING)},
    )
    return {str(currency): total for currency, total in rows}


def revenue_per_day(
    connection: Connection, start: datetime, end: datetime
) -> list[tuple[datetime, str, Decimal]]:
    """Per day of issue (drafts: of creation) and currency: what those invoices total."""
    rows = connection.exec_driver_sql(
        "SELECT date_trunc('day', coalesce(issued_at, created_at)), currency, sum(total) "
        "FROM invoices WHERE coalesce(issued_at, created_at) >= %(s)s "
        "AND coalesce(issued_at, created_at) < %(e)s "
        "AND (status = ANY(%(binding)s) OR status = 'draft') GROUP BY 1, 2 ORDER BY 1, 2",
        {"s": start, "e": end, "binding": list(BINDING)},
    )
    return [(day, str(currency), total) for day, currency, total in rows]


def compact(connection: Connection, before: datetime) -> None:
    """Minutes older than `before` become hours (one row per hour and bucket): the tables
    stay small over years while every window of whole hours keeps its figures."""
    for table, key, value in (
        ("ingest_minutes", "minute", "events"),
        ("ingest_latency", "minute, bucket_ms", "requests"),
    ):
        grouping = "date_trunc('hour', minute)" + (", bucket_ms" if "bucket_ms" in key else "")
        connection.exec_driver_sql(
            f"WITH old AS (DELETE FROM {table} WHERE minute < %(b)s "  # noqa: S608 - fixed names
            f"AND minute <> date_trunc('hour', minute) RETURNING *) "
            f"INSERT INTO {table} ({key}, {value}) SELECT {grouping}, sum({value}) FROM old "
            f"GROUP BY {grouping} ORDER BY 1 "
            f"ON CONFLICT ({key}) DO UPDATE SET {value} = {table}.{value} + excluded.{value}",
            {"b": before},
        )
