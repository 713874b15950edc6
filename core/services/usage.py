"""Usage summaries. `exact`: a scan of the raw events with the meter definitions, with a
checksum over exactly the events counted. (`realtime`, answered from rollups, comes with
the aggregator.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.adapters.postgres import metrics as metric_rows
from core.adapters.postgres import usage as usage_rows
from core.adapters.postgres.database import get_database
from core.domain.errors import FieldError, ValidationFailed
from core.domain.meters import MeterVersion
from core.domain.metrics import Aggregation, effective_to

WINDOW_DAYS_MAX = 400


def meter_versions(connection: Any, key: str) -> list[MeterVersion]:
    """A metric's versions as meters, each ending where the next begins."""
    rows = metric_rows.versions(connection, [key])[key]
    starts = [row["effective_from"] for row in rows]
    return [
        MeterVersion(
            version=row["version"],
            aggregation=Aggregation(row["aggregation"]),
            effective_from=row["effective_from"],
            effective_to=effective_to(starts, index),
            filters=dict(row["filters"]),
            group_by=tuple(row["group_by"]),
            unique_property=row["unique_property"],
            percentile=row["percentile"],
        )
        for index, row in enumerate(rows)
    ]


def _check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise ValidationFailed(
            "`to` must be after `from`", errors=[FieldError(("query", "to"), "not after from")]
        )
    if end - start > timedelta(days=WINDOW_DAYS_MAX):
        raise ValidationFailed(
            f"a summary covers at most {WINDOW_DAYS_MAX} days",
            errors=[FieldError(("query", "from"), "window too long")],
        )


def exact_summary(
    *, customer_id: str, metric_key: str, start: datetime, end: datetime
) -> dict[str, Any]:
    _check_window(start, end)
    with get_database().transaction() as connection:
        if metric_rows.get(connection, metric_key) is None:
            raise ValidationFailed(
                f"no metric {metric_key!r}",
                code="unknown_metric",
                errors=[FieldError(("query", "metric_key"), "unknown metric")],
            )
        versions = meter_versions(connection, metric_key)
        result = usage_rows.scan(
            connection,
            customer_id=customer_id,
            metric_key=metric_key,
            versions=versions,
            start=start,
            end=end,
        )
    by_version = {v.version: v for v in versions}
    split = len({g.version for g in result.groups}) > 1 or any(
        by_version[g.version].group_by for g in result.groups
    )
    return {
        "customer_id": customer_id,
        "metric_key": metric_key,
        "from": start,
        "to": end,
        "value": result.total,
        "event_count": result.event_count,
        "consistency": "exact",
        "as_of": datetime.now(UTC),
        "approximate": False,
        "meter_versions": sorted({g.version for g in result.groups}),
        "groups": [
            {
                "meter_version": g.version,
                "group": dict(zip(by_version[g.version].group_by, g.group, strict=True)),
                "value": g.value,
                "event_count": g.event_count,
            }
            for g in sorted(
                result.groups, key=lambda g: (g.version, tuple(x or "" for x in g.group))
            )
        ]
        if split
        else [],
        "checksum": "sha256:" + result.checksum,
    }


def metrics_with_usage(*, customer_id: str, start: datetime, end: datetime) -> list[str]:
    _check_window(start, end)
    with get_database().transaction() as connection:
        return usage_rows.metric_keys(connection, customer_id=customer_id, start=start, end=end)
