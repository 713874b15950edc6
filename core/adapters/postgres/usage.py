"""The exact scan: meter evaluation in SQL over the raw events, the same definitions as
core/domain/meters.py (the tests run both on the same events and compare).

One statement per meter version (versions are disjoint in time), grouped by the
version's group_by, with every aggregation computed at once; one more statement for the
checksum, so nothing is loaded into Python: memory stays flat in the number of events.

Checksum (docs/concepts.md): SHA-256 over one line per counted event, ordered by
(timestamp, idempotency_key):  idempotency_key TAB timestamp TAB value TAB version LF,
timestamp as RFC 3339 UTC with `Z` (microseconds only when not zero), value as its
normalized decimal text. No events: the SHA-256 of the empty string.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.domain.meters import MeterVersion
from core.domain.metrics import Aggregation

# The text form of a property as core.domain.meters.property_text sees it: objects and
# arrays are no text; everything else is ->> (strings as they are, numbers as stored).
PROPERTY_TEXT = "(CASE WHEN jsonb_typeof(properties -> %(name)s) IN ('object', 'array') THEN NULL ELSE properties ->> %(name)s END)"
TIMESTAMP_TEXT = (
    "to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || "
    "CASE WHEN mod(extract(microseconds FROM timestamp)::bigint, 1000000) = 0 THEN '' "
    "ELSE '.' || to_char(timestamp AT TIME ZONE 'UTC', 'US') END || 'Z'"
)


@dataclass(frozen=True)
class GroupUsage:
    version: int
    group: tuple[str | None, ...]
    value: Decimal
    event_count: int


def _property(name: str, params: dict[str, Any], slot: str) -> str:
    params[slot] = name
    return PROPERTY_TEXT.replace("%(name)s", f"%({slot})s")


def _window(
    version: MeterVersion, start: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    lower = max(start, version.effective_from)
    upper = end if version.effective_to is None else min(end, version.effective_to)
    return (lower, upper) if lower < upper else None


def _conditions(version: MeterVersion, params: dict[str, Any], prefix: str) -> list[str]:
    clauses = []
    for index, (name, allowed) in enumerate(sorted(version.filters.items())):
        params[f"{prefix}_f{index}_values"] = list(allowed)
        clauses.append(
            f"{_property(name, params, f'{prefix}_f{index}')} = ANY(%({prefix}_f{index}_values)s)"
        )
    return clauses


def _value_expression(version: MeterVersion, params: dict[str, Any]) -> str:
    aggregation = version.aggregation
    if aggregation == Aggregation.UNIQUE_COUNT:
        assert version.unique_property is not None
        return f"count(DISTINCT {_property(version.unique_property, params, 'unique')})::numeric"
    if aggregation == Aggregation.PERCENTILE:
        assert version.percentile is not None
        params["fraction"] = version.percentile / 100
        return "percentile_disc(%(fraction)s::float8) WITHIN GROUP (ORDER BY value)"
    return {
        Aggregation.SUM: "sum(value)",
        Aggregation.COUNT: "count(*)::numeric",
        Aggregation.MAX: "max(value)",
        Aggregation.MIN: "min(value)",
        Aggregation.LAST: '(array_agg(value ORDER BY timestamp DESC, idempotency_key COLLATE "C" DESC))[1]',
    }[aggregation]


@dataclass(frozen=True)
class ScanResult:
    groups: list[GroupUsage]
    checksum: str
    # Over all counted events, when every version in the window aggregates the same way.
    total: Decimal | None
    event_count: int


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _uniform(versions: list[MeterVersion]) -> bool:
    return len({(v.aggregation, v.unique_property, v.percentile) for v in versions}) <= 1


def scan(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    versions: list[MeterVersion],
    start: datetime,
    end: datetime,
) -> ScanResult:
    """Usage per (version, group), the total, and the checksum of the counted events."""
    groups: list[GroupUsage] = []
    counted_selects: list[str] = []
    union_params: dict[str, Any] = {"customer": customer_id, "metric": metric_key}
    in_window = []
    for version in versions:
        window = _window(version, start, end)
        if window is None:
            continue
        in_window.append(version)
        groups.extend(_groups(connection, customer_id, metric_key, version, window))
        prefix = f"c{version.version}"
        union_params.update(
            {
                f"{prefix}_start": window[0],
                f"{prefix}_end": window[1],
                f"{prefix}_version": str(version.version),
            }
        )
        conditions = " AND ".join(
            [
                f"timestamp >= %({prefix}_start)s",
                f"timestamp < %({prefix}_end)s",
                *_conditions(version, union_params, prefix),
            ]
        )
        counted_selects.append(
            f"SELECT timestamp, idempotency_key, value, properties, %({prefix}_version)s AS version FROM events "
            f"WHERE customer_id = %(customer)s AND metric_key = %(metric)s AND {conditions}"
        )
    if not counted_selects:
        return ScanResult(groups, EMPTY_SHA256, Decimal(0), 0)
    counted = " UNION ALL ".join(counted_selects)
    line = f"idempotency_key || E'\\t' || {TIMESTAMP_TEXT} || E'\\t' || trim_scale(value)::text || E'\\t' || version || E'\\n'"
    checksum_sql = f"SELECT encode(sha256(convert_to(coalesce(string_agg({line}, '' ORDER BY timestamp, idempotency_key COLLATE \"C\"), ''), 'UTF8')), 'hex') FROM ({counted}) AS counted"
    checksum = str(connection.exec_driver_sql(checksum_sql, union_params).scalar_one())
    total: Decimal | None = None
    if _uniform(in_window):
        total_params = dict(union_params)
        expression = _value_expression(in_window[-1], total_params)
        value, events = connection.exec_driver_sql(
            f"SELECT {expression}, count(*) FROM ({counted}) AS counted", total_params
        ).one()
        total, event_count = Decimal(value if value is not None else 0), int(events)
    else:
        event_count = sum(g.event_count for g in groups)
    return ScanResult(groups, checksum, total, event_count)


def _groups(
    connection: Connection,
    customer_id: str,
    metric_key: str,
    version: MeterVersion,
    window: tuple[datetime, datetime],
) -> list[GroupUsage]:
    params: dict[str, Any] = {
        "customer": customer_id,
        "metric": metric_key,
        "start": window[0],
        "end": window[1],
    }
    where = [
        "customer_id = %(customer)s",
        "metric_key = %(metric)s",
        "timestamp >= %(start)s",
        "timestamp < %(end)s",
        *_conditions(version, params, "v"),
    ]
    groups = [_property(name, params, f"g{index}") for index, name in enumerate(version.group_by)]
    select_groups = "".join(f"{g} AS g{i}, " for i, g in enumerate(groups))
    group_clause = f" GROUP BY {', '.join(f'g{i}' for i in range(len(groups)))}" if groups else ""
    statement = f"SELECT {select_groups}{_value_expression(version, params)} AS value, count(*) AS events FROM events WHERE {' AND '.join(where)}{group_clause}"
    found = []
    for row in connection.exec_driver_sql(statement, params):
        *group, value, events = row
        if events:
            found.append(
                GroupUsage(
                    version.version,
                    tuple(group),
                    Decimal(value if value is not None else 0),
                    int(events),
                )
            )
    return found


def metric_keys(
    connection: Connection, *, customer_id: str, start: datetime, end: datetime
) -> list[str]:
    """The metrics a customer has events for in [start, end)."""
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT metric_key FROM events WHERE customer_id = %(customer)s AND timestamp >= %(start)s AND timestamp < %(end)s ORDER BY 1",
        {"customer": customer_id, "start": start, "end": end},
    )
    return [str(key) for (key,) in rows]
