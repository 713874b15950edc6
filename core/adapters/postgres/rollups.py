"""Rollups: hourly partial aggregates per customer, metric, meter version and group,
folded from the events of ingestion jobs in the transaction that completes the jobs.

Concurrency: folds of a metric take a shared advisory lock on it, a refold (a new meter
version changed what counts) takes it exclusively, so a refold sees every fold either
committed (its job done) or not started. Within a statement, rows are upserted in key
order, and statements run in (metric, version) order, so concurrent folds lock rows in
one global order instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from core.adapters.postgres.usage import (
    BIN_SQL,
    excluded_rows,
    partial_columns,
    version_rows,
    window_of,
)
from core.domain.meters import SKETCH_LN_GAMMA, MeterVersion
from core.domain.metrics import Aggregation

BEGINNING = datetime(1, 1, 2, tzinfo=UTC)
LOCK_PREFIX = "abaxus_fold:"
BUCKET_SQL = "date_trunc('hour', timestamp, 'UTC')"
KEY_COLUMNS = "customer_id, metric_key, bucket_start, version, group_values"
NEWER = (
    "excluded.last_timestamp IS NOT NULL AND (r.last_timestamp IS NULL "
    "OR excluded.last_timestamp > r.last_timestamp OR (excluded.last_timestamp = r.last_timestamp "
    'AND excluded.last_key COLLATE "C" > r.last_key COLLATE "C"))'
)


# Events already folded, as one statement sees them: not of a fold job still unfinished,
# read in the same statement (an InitPlan, evaluated once), so a job that commits or
# finishes while a refold runs is either in the refold or folded by its own job, never both.
FOLDED = (
    "ingest_job_id <> ALL(ARRAY(SELECT id FROM jobs WHERE queue = %(fold_queue)s "
    "AND kind = %(fold_kind)s AND status <> 'done'))"
)


def lock_metrics(connection: Connection, keys: Sequence[str], *, exclusive: bool) -> None:
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    for key in sorted(keys):
        connection.exec_driver_sql(
            f"SELECT {function}(hashtextextended(%(key)s, 0))", {"key": LOCK_PREFIX + key}
        )


def job_metric_keys(connection: Connection, job_ids: Sequence[int]) -> list[str]:
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT metric_key FROM events WHERE ingest_job_id = ANY(%(jobs)s) ORDER BY 1",
        {"jobs": list(job_ids)},
    )
    return [str(key) for (key,) in rows]


def fold(
    connection: Connection,
    metric_key: str,
    versions: Sequence[MeterVersion],
    *,
    where: Sequence[str],
    params: dict[str, Any],
    since: datetime = BEGINNING,
) -> int:
    """Fold the events of `metric_key` selected by `where` (from `since` on) into the
    rollups of the versions that count them; returns how many rollup rows it touched."""
    touched = 0
    for version in sorted(versions, key=lambda v: v.version):
        window = window_of(version, since, None)
        if window is None:
            continue
        statement_params = {**params, "metric": metric_key, "ln_gamma": SKETCH_LN_GAMMA}
        source, group_sql, unique = version_rows(
            version,
            statement_params,
            "v",
            where=["metric_key = %(metric)s", *where],
            window=window,
        )
        head = (
            f"SELECT customer_id, metric_key, {BUCKET_SQL} AS bucket, {version.version}, "
            f"{group_sql} AS grp"
        )
        order = "ORDER BY customer_id, metric_key, bucket, grp"
        result = connection.exec_driver_sql(
            f"INSERT INTO usage_rollups AS r ({KEY_COLUMNS}, event_count, digest_sum, total, "
            "smallest, largest, last_timestamp, last_key, last_value) "
            f"{head}, {partial_columns(version)} {source} "
            f"GROUP BY customer_id, metric_key, bucket, grp {order} "
            f"ON CONFLICT ({KEY_COLUMNS}) DO UPDATE SET "
            "event_count = r.event_count + excluded.event_count, "
            "digest_sum = r.digest_sum + excluded.digest_sum, "
            "total = r.total + excluded.total, "
            "smallest = least(r.smallest, excluded.smallest), "
            "largest = greatest(r.largest, excluded.largest), "
            f"last_timestamp = CASE WHEN {NEWER} THEN excluded.last_timestamp ELSE r.last_timestamp END, "
            f"last_key = CASE WHEN {NEWER} THEN excluded.last_key ELSE r.last_key END, "
            f"last_value = CASE WHEN {NEWER} THEN excluded.last_value ELSE r.last_value END, "
            "updated_at = now()",
            statement_params,
        )
        touched += int(result.rowcount)
        excluded = excluded_rows(
            version,
            statement_params,
            "x",
            where=["metric_key = %(metric)s", *where],
            window=window,
        )
        if excluded is not None:
            connection.exec_driver_sql(
                "INSERT INTO usage_rollup_excluded AS r (customer_id, metric_key, bucket_start, "
                f"version, event_count) SELECT customer_id, metric_key, {BUCKET_SQL} AS bucket, "
                f"{version.version}, count(*) {excluded} GROUP BY customer_id, metric_key, bucket "
                "ORDER BY customer_id, metric_key, bucket "
                "ON CONFLICT (customer_id, metric_key, bucket_start, version) DO UPDATE SET "
                "event_count = r.event_count + excluded.event_count",
                statement_params,
            )
        if unique is not None:
            connection.exec_driver_sql(
                f"INSERT INTO usage_rollup_distinct ({KEY_COLUMNS}, value_text) "
                f"SELECT DISTINCT customer_id, metric_key, {BUCKET_SQL} AS bucket, {version.version}, "
                f"{group_sql} AS grp, {unique} AS u {source} AND {unique} IS NOT NULL "
                f"ORDER BY customer_id, metric_key, bucket, grp, u ON CONFLICT DO NOTHING",
                statement_params,
            )
        if version.aggregation == Aggregation.PERCENTILE:
            connection.exec_driver_sql(
                f"INSERT INTO usage_rollup_sketch AS r ({KEY_COLUMNS}, sign, bin, event_count) "
                f"{head}, sign(value)::smallint AS s, {BIN_SQL} AS b, count(*) {source} "
                f"GROUP BY customer_id, metric_key, bucket, grp, s, b {order}, s, b "
                f"ON CONFLICT ({KEY_COLUMNS}, sign, bin) DO UPDATE SET "
                "event_count = r.event_count + excluded.event_count",
                statement_params,
            )
    return touched


def fold_jobs(
    connection: Connection,
    metric_key: str,
    versions: Sequence[MeterVersion],
    job_ids: Sequence[int],
) -> int:
    return fold(
        connection,
        metric_key,
        versions,
        where=["ingest_job_id = ANY(%(jobs)s)"],
        params={"jobs": list(job_ids)},
    )


def unfinished_jobs(connection: Connection, queue: str, kind: str) -> list[int]:
    rows = connection.exec_driver_sql(
        "SELECT id FROM jobs WHERE queue = %(queue)s AND kind = %(kind)s AND status <> 'done'",
        {"queue": queue, "kind": kind},
    )
    return [int(job_id) for (job_id,) in rows]


def refold(
    connection: Connection,
    metric_key: str,
    versions: Sequence[MeterVersion],
    *,
    since: datetime,
    fold_queue: str,
    fold_kind: str,
) -> int:
    """Rebuild a metric's rollups from the hour of `since` on, from the events already
    folded (those of unfinished fold jobs are folded by their jobs: `FOLDED`)."""
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    for table in (
        "usage_rollups",
        "usage_rollup_distinct",
        "usage_rollup_sketch",
        "usage_rollup_excluded",
    ):
        connection.exec_driver_sql(
            f"DELETE FROM {table} WHERE metric_key = %(metric)s AND bucket_start >= %(hour)s",
            {"metric": metric_key, "hour": hour},
        )
    return fold(
        connection,
        metric_key,
        versions,
        where=[FOLDED],
        params={"fold_queue": fold_queue, "fold_kind": fold_kind},
        since=hour,
    )


def refold_window(
    connection: Connection,
    metric_key: str,
    versions: Sequence[MeterVersion],
    *,
    customer_id: str | None,
    start: datetime,
    end: datetime,
    fold_queue: str,
    fold_kind: str,
) -> int:
    """Rebuild a metric's rollups (of one customer, or all) for the hours [start, end)
    touches, from the events already folded (a correction applied or reverted: what counts
    there changed). The caller holds the metric's fold lock exclusively."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    last = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if last < end:
        last += timedelta(hours=1)
    params: dict[str, Any] = {"metric": metric_key, "first": first, "last": last}
    where = [FOLDED, "timestamp < %(last)s"]
    scope = ""
    if customer_id is not None:
        params["customer"] = customer_id
        scope = " AND customer_id = %(customer)s"
        where.append("customer_id = %(customer)s")
    for table in (
        "usage_rollups",
        "usage_rollup_distinct",
        "usage_rollup_sketch",
        "usage_rollup_excluded",
    ):
        connection.exec_driver_sql(
            f"DELETE FROM {table} WHERE metric_key = %(metric)s "
            f"AND bucket_start >= %(first)s AND bucket_start < %(last)s{scope}",
            params,
        )
    return fold(
        connection,
        metric_key,
        versions,
        where=where,
        params={**params, "fold_queue": fold_queue, "fold_kind": fold_kind},
        since=first,
    )


def watermark(connection: Connection, queue: str, kinds: Sequence[str]) -> datetime:
    """When the oldest unfinished fold work was enqueued, or now: every ingestion committed
    before it is folded."""
    found: datetime = connection.exec_driver_sql(
        "SELECT coalesce(min(created_at), now()) FROM jobs "
        "WHERE queue = %(queue)s AND kind = ANY(%(kinds)s) AND status <> 'done'",
        {"queue": queue, "kinds": list(kinds)},
    ).scalar_one()
    return found


def unfolded_events(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    start: datetime,
    end: datetime,
    job_ids: Sequence[int],
) -> int:
    """Events of the window that belong to jobs not folded yet."""
    if not job_ids:
        return 0
    return int(
        connection.exec_driver_sql(
            "SELECT count(*) FROM events WHERE customer_id = %(customer)s AND metric_key = %(metric)s "
            "AND timestamp >= %(start)s AND timestamp < %(end)s AND ingest_job_id = ANY(%(jobs)s)",
            {
                "customer": customer_id,
                "metric": metric_key,
                "start": start,
                "end": end,
                "jobs": list(job_ids),
            },
        ).scalar_one()
    )


def refold_pending(connection: Connection, queue: str, kind: str, metric_key: str) -> bool:
    return bool(
        connection.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = %(queue)s AND kind = %(kind)s "
            "AND status <> 'done' AND payload ->> 'metric_key' = %(metric)s)",
            {"queue": queue, "kind": kind, "metric": metric_key},
        ).scalar_one()
    )


def sample_customers(
    connection: Connection, *, start: datetime, end: datetime, limit: int
) -> list[str]:
    """Up to `limit` customers with rollups in [start, end), a different sample each call."""
    rows = connection.exec_driver_sql(
        "SELECT customer_id FROM (SELECT DISTINCT customer_id FROM usage_rollups "
        "WHERE bucket_start >= %(start)s AND bucket_start < %(end)s) AS c ORDER BY random() LIMIT %(limit)s",
        {"start": start, "end": end, "limit": limit},
    )
    return [str(c) for (c,) in rows]
