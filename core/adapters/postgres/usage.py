"""Meter evaluation in SQL, with the same definitions as core/domain/meters.py (the tests
run both on the same events and compare):

- the exact scan: one statement over the raw events of a customer, metric and window,
  every meter version's rows unioned and grouped by (version, group), computing only the
  aggregates the versions need plus the event count and digest sum per group, from which
  the checksum follows (core.domain.meters.usage_checksum). Nothing is loaded into Python
  but one row per group: memory stays flat in the number of events.
- the fold: the same per-version selection, grouped by customer and UTC hour as well,
  upserted into the rollups (core/adapters/postgres/rollups.py drives it).
- the real-time answer: rollups of the whole hours inside [from, to) merged with the same
  partial aggregates computed from the raw events of the partial hours at the edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from core.domain.corrections import Supersession
from core.domain.meters import (
    SKETCH_LN_GAMMA,
    MeterVersion,
    SketchBin,
    sketch_percentile,
    usage_checksum,
)
from core.domain.metrics import Aggregation

ZERO = Decimal(0)
HOUR = timedelta(hours=1)
# The text form of a property as core.domain.meters.property_text sees it: objects and
# arrays are no text; everything else is ->> (strings as they are, numbers as stored).
PROPERTY_TEXT = "(CASE WHEN jsonb_typeof(properties -> %(name)s) IN ('object', 'array') THEN NULL ELSE properties ->> %(name)s END)"
LAST_ORDER = 'ORDER BY timestamp DESC, idempotency_key COLLATE "C" DESC'
PART_LAST_ORDER = 'ORDER BY last_timestamp DESC NULLS LAST, last_key COLLATE "C" DESC'
BIN_SQL = (
    "CASE WHEN value = 0 THEN 0 ELSE ceil(ln(abs(value)) / %(ln_gamma)s::numeric)::integer END"
)


def _property(name: str, params: dict[str, Any], slot: str) -> str:
    params[slot] = name
    return PROPERTY_TEXT.replace("%(name)s", f"%({slot})s")


def window_of(
    version: MeterVersion, start: datetime, end: datetime | None
) -> tuple[datetime, datetime | None] | None:
    """The part of [start, end) that a version counts (end None: unbounded)."""
    lower = max(start, version.effective_from)
    ends = [t for t in (end, version.effective_to) if t is not None]
    upper = min(ends) if ends else None
    return (lower, upper) if upper is None or lower < upper else None


def _scanned_customer(where: Sequence[str], params: dict[str, Any]) -> str | None:
    """The one customer a scan is restricted to (callers write `customer_id = %(customer)s`),
    so the predicates of other customers' corrections can be left out."""
    return params.get("customer") if "customer_id = %(customer)s" in where else None


def superseded_clauses(
    superseded: Supersession, params: dict[str, Any], prefix: str, *, customer: str | None = None
) -> list[str]:
    """The WHERE clauses that leave out the events corrections supersede (API.md §19): a
    replaced range (timestamp in it, received before the apply, of its customer), a
    retracted key, an event of a withdrawn (reverted) correction; and the copies of an
    event accepted in several regions that do not count (API.md §10). None without any."""
    clauses = []
    for index, found in enumerate(superseded.replaced):
        if customer is not None and found.customer_id not in {None, customer}:
            continue  # another customer's range: nothing of this scan is in it
        name = f"{prefix}_r{index}"
        params[f"{name}_s"], params[f"{name}_e"] = found.start, found.end
        params[f"{name}_t"] = found.received_before
        # NOT (in the range AND received before the apply [AND its customer]), written as
        # the disjunction it is, so the planner can read the range's counting rows by the
        # events_received BRIN index instead of every superseded row.
        other_customer = ""
        if found.customer_id is not None and customer is None:
            params[f"{name}_c"] = found.customer_id
            other_customer = f" OR customer_id <> %({name}_c)s"
        clauses.append(
            f"(timestamp < %({name}_s)s OR timestamp >= %({name}_e)s "
            f"OR received_at >= %({name}_t)s{other_customer})"
        )
    if superseded.retracted:
        params[f"{prefix}_rk"] = [key for key, _ in superseded.retracted]
        clauses.append(f"idempotency_key <> ALL(%({prefix}_rk)s::text[])")
    if superseded.withdrawn:
        params[f"{prefix}_wd"] = list(superseded.withdrawn)
        clauses.append(f"(correction_id IS NULL OR correction_id <> ALL(%({prefix}_wd)s::text[]))")
    if superseded.region_duplicates:
        bound = ""
        if superseded.duplicates_as_of is not None:
            params[f"{prefix}_dup"] = superseded.duplicates_as_of
            bound = f" AND d.recorded_at <= %({prefix}_dup)s"
        clauses.append(
            "NOT EXISTS (SELECT 1 FROM region_duplicates d WHERE d.region = events.region "
            f"AND d.event_id = events.id{bound})"
        )
    return clauses


def version_rows(
    version: MeterVersion,
    params: dict[str, Any],
    prefix: str,
    *,
    where: Sequence[str],
    window: tuple[datetime, datetime | None],
) -> tuple[str, str, str | None]:
    """(FROM-WHERE clause selecting the events this version counts among `where`, the
    group array expression, the distinct-value expression or None)."""
    params[f"{prefix}_start"] = window[0]
    clauses = [*where, f"timestamp >= %({prefix}_start)s"]
    if window[1] is not None:
        params[f"{prefix}_end"] = window[1]
        clauses.append(f"timestamp < %({prefix}_end)s")
    clauses.extend(
        superseded_clauses(
            version.superseded, params, prefix, customer=_scanned_customer(where, params)
        )
    )
    for index, (name, allowed) in enumerate(sorted(version.filters.items())):
        params[f"{prefix}_f{index}_values"] = list(allowed)
        clauses.append(
            f"{_property(name, params, f'{prefix}_f{index}')} = ANY(%({prefix}_f{index}_values)s)"
        )
    groups = [
        _property(name, params, f"{prefix}_g{index}") for index, name in enumerate(version.group_by)
    ]
    group_sql = f"ARRAY[{', '.join(groups)}]::text[]" if groups else "'{}'::text[]"
    unique = None
    if version.aggregation == Aggregation.UNIQUE_COUNT and version.unique_property:
        unique = _property(version.unique_property, params, f"{prefix}_u")
    return f"FROM events WHERE {' AND '.join(clauses)}", group_sql, unique


def excluded_rows(
    version: MeterVersion,
    params: dict[str, Any],
    prefix: str,
    *,
    where: Sequence[str],
    window: tuple[datetime, datetime | None],
) -> str | None:
    """The FROM-WHERE clause selecting the events of `where` in the version's window that
    its filters exclude (a property missing or another value), or None without filters."""
    if not version.filters:
        return None
    params[f"{prefix}_start"] = window[0]
    clauses = [*where, f"timestamp >= %({prefix}_start)s"]
    if window[1] is not None:
        params[f"{prefix}_end"] = window[1]
        clauses.append(f"timestamp < %({prefix}_end)s")
    clauses.extend(
        superseded_clauses(
            version.superseded, params, prefix, customer=_scanned_customer(where, params)
        )
    )
    kept = []
    for index, (name, allowed) in enumerate(sorted(version.filters.items())):
        params[f"{prefix}_x{index}_values"] = list(allowed)
        kept.append(
            f"{_property(name, params, f'{prefix}_x{index}')} = ANY(%({prefix}_x{index}_values)s)"
        )
    clauses.append(f"NOT coalesce({' AND '.join(kept)}, false)")
    return f"FROM events WHERE {' AND '.join(clauses)}"


def partial_columns(version: MeterVersion) -> str:
    """Aggregates of a version's events in rollup shape (n, digests, total, smallest,
    largest, last_timestamp, last_key, last_value); `last` only for last meters."""
    if version.aggregation == Aggregation.LAST:
        last = (
            f"max(timestamp), (array_agg(idempotency_key {LAST_ORDER}))[1], "
            f"(array_agg(value {LAST_ORDER}))[1]"
        )
    else:
        last = "NULL::timestamptz, NULL::text, NULL::numeric"
    return f"count(*), sum(digest), sum(value), min(value), max(value), {last}"


@dataclass
class Partial:
    """A (version, group)'s mergeable aggregates."""

    version: int
    group: tuple[str | None, ...]
    event_count: int = 0
    digest_sum: int = 0
    total: Decimal = ZERO
    smallest: Decimal | None = None
    largest: Decimal | None = None
    last: tuple[datetime, str, Decimal] | None = None
    distinct: int = 0
    percentile: Decimal | None = None  # exact nearest rank (exact scans)
    bins: dict[SketchBin, int] = field(default_factory=dict)  # sketch (real-time)

    def merge(self, other: Partial) -> None:
        self.event_count += other.event_count
        self.digest_sum += other.digest_sum
        self.total += other.total
        self.smallest = _pick(min, self.smallest, other.smallest)
        self.largest = _pick(max, self.largest, other.largest)
        if other.last is not None and (self.last is None or other.last[:2] > self.last[:2]):
            self.last = other.last
        for key, count in other.bins.items():
            self.bins[key] = self.bins.get(key, 0) + count

    def value(self, version: MeterVersion) -> Decimal:
        aggregation = version.aggregation
        if aggregation == Aggregation.COUNT:
            return Decimal(self.event_count)
        if aggregation == Aggregation.UNIQUE_COUNT:
            return Decimal(self.distinct)
        if self.event_count == 0:
            return ZERO
        if aggregation == Aggregation.PERCENTILE:
            if self.percentile is not None:
                return self.percentile
            assert version.percentile is not None
            return sketch_percentile(self.bins, version.percentile)
        found = {
            Aggregation.SUM: self.total,
            Aggregation.MAX: self.largest,
            Aggregation.MIN: self.smallest,
            Aggregation.LAST: self.last[2] if self.last else None,
        }[aggregation]
        assert found is not None
        return found


def _pick(choose: Any, a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return Decimal(choose(a, b))


def _partial(row: Sequence[Any]) -> Partial:
    version, group, n, digests, total, smallest, largest, last_ts, last_key, last_value = row[:10]
    return Partial(
        version=int(version),
        group=tuple(group),
        event_count=int(n),
        digest_sum=int(digests or 0),
        total=Decimal(total if total is not None else 0),
        smallest=smallest,
        largest=largest,
        last=(last_ts, str(last_key), Decimal(last_value)) if last_ts is not None else None,
    )


@dataclass(frozen=True)
class GroupUsage:
    version: int
    group: tuple[str | None, ...]
    value: Decimal
    event_count: int


@dataclass(frozen=True)
class ScanResult:
    groups: list[GroupUsage]
    checksum: str
    # Over all counted events, when every version in the window aggregates the same way.
    total: Decimal | None
    event_count: int
    approximate: bool = False


def _uniform(versions: Sequence[MeterVersion]) -> bool:
    return len({(v.aggregation, v.unique_property, v.percentile) for v in versions}) <= 1


def _needs_overall_row(versions: Sequence[MeterVersion]) -> bool:
    """unique_count and percentile do not merge from group results: the overall value
    needs its own grouping set (only when there can be more than one group)."""
    return (
        _uniform(versions)
        and versions[0].aggregation in {Aggregation.UNIQUE_COUNT, Aggregation.PERCENTILE}
        and (len(versions) > 1 or bool(versions[0].group_by))
    )


def _result(
    versions: Sequence[MeterVersion],
    partials: dict[tuple[int, tuple[str | None, ...]], Partial],
    overall: Partial | None,
    *,
    approximate: bool = False,
) -> ScanResult:
    by_version = {v.version: v for v in versions}
    found = [p for p in partials.values() if p.event_count]
    groups = [
        GroupUsage(p.version, p.group, p.value(by_version[p.version]), p.event_count) for p in found
    ]
    per_version: dict[int, tuple[int, int]] = {}
    for p in found:
        count, digests = per_version.get(p.version, (0, 0))
        per_version[p.version] = (count + p.event_count, digests + p.digest_sum)
    event_count = sum(p.event_count for p in found)
    total: Decimal | None = None
    if not versions:
        total = ZERO
    elif _uniform(versions):
        merged = Partial(version=versions[-1].version, group=())
        for p in found:
            merged.merge(p)
        if overall is not None:
            merged.distinct, merged.percentile = overall.distinct, overall.percentile
        elif len(found) == 1:
            merged.distinct, merged.percentile = found[0].distinct, found[0].percentile
        total = merged.value(versions[-1])
    return ScanResult(groups, usage_checksum(per_version), total, event_count, approximate)


def scan(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    versions: Sequence[MeterVersion],
    start: datetime,
    end: datetime,
) -> ScanResult:
    """Exact usage per (version, group), the total and the checksum, in one statement."""
    params: dict[str, Any] = {"customer": customer_id, "metric": metric_key}
    windows = {v.version: window_of(v, start, end) for v in versions}
    in_window = [v for v in versions if windows[v.version] is not None]
    if not in_window:
        return _result([], {}, None)
    aggregations = {v.aggregation for v in in_window}
    selects = []
    for version in in_window:
        window = windows[version.version]
        assert window is not None
        prefix = f"v{version.version}"
        source, group_sql, unique = version_rows(
            version,
            params,
            prefix,
            where=["customer_id = %(customer)s", "metric_key = %(metric)s"],
            window=window,
        )
        # Only the columns the aggregates read, so the scan carries nothing more.
        extra = ""
        if Aggregation.LAST in aggregations:
            extra += ", timestamp, idempotency_key"
        if Aggregation.UNIQUE_COUNT in aggregations:
            extra += f", {unique or 'NULL::text'} AS uniq"
        if Aggregation.PERCENTILE in aggregations:
            params[f"{prefix}_p"] = version.percentile
            extra += f", %({prefix}_p)s::numeric AS p"
        selects.append(
            f"SELECT {version.version} AS v, {group_sql} AS grp, value, digest{extra} {source}"
        )
    columns = [
        "count(*)",
        "sum(digest)",
        "sum(value)" if Aggregation.SUM in aggregations else "NULL::numeric",
        "min(value)" if Aggregation.MIN in aggregations else "NULL::numeric",
        "max(value)" if Aggregation.MAX in aggregations else "NULL::numeric",
        f"max(timestamp), (array_agg(idempotency_key {LAST_ORDER}))[1], (array_agg(value {LAST_ORDER}))[1]"
        if Aggregation.LAST in aggregations
        else "NULL::timestamptz, NULL::text, NULL::numeric",
        "count(DISTINCT uniq)" if Aggregation.UNIQUE_COUNT in aggregations else "0",
        "(array_agg(value ORDER BY value))[greatest(1, ceil(max(p) / 100 * count(*)))::integer]"
        if Aggregation.PERCENTILE in aggregations
        else "NULL::numeric",
    ]
    overall = _needs_overall_row(in_window)
    grouping = "GROUPING SETS ((v, grp), ())" if overall else "v, grp"
    statement = (
        f"SELECT v, grp, {', '.join(columns)}, GROUPING(v, grp) "
        f"FROM ({' UNION ALL '.join(selects)}) AS counted GROUP BY {grouping}"
    )
    partials: dict[tuple[int, tuple[str | None, ...]], Partial] = {}
    overall_partial: Partial | None = None
    for row in connection.exec_driver_sql(statement, params):
        *head, distinct, percentile, is_overall = row
        if is_overall:
            overall_partial = Partial(
                0, (), int(head[2]), distinct=int(distinct), percentile=percentile
            )
            continue
        partial = _partial(head)
        partial.distinct, partial.percentile = int(distinct), percentile
        partials[(partial.version, partial.group)] = partial
    return _result(in_window, partials, overall_partial)


def _hours(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[first whole hour, end of the last whole hour) inside [start, end); empty when
    first >= last."""
    floor_start = start.replace(minute=0, second=0, microsecond=0)
    first = floor_start if floor_start == start else floor_start + HOUR
    last = end.replace(minute=0, second=0, microsecond=0)
    return first, last


def edges(
    start: datetime, end: datetime
) -> tuple[tuple[datetime, datetime] | None, list[tuple[datetime, datetime]]]:
    """The whole hours answered from rollups, and the partial-hour edges scanned raw."""
    first, last = _hours(start, end)
    if first >= last:
        return None, [(start, end)]
    raw = [(a, b) for a, b in ((start, first), (last, end)) if a < b]
    return (first, last), raw


@dataclass
class _Parts:
    """The UNION ALL members of a real-time answer: rollup rows and raw edge rows."""

    params: dict[str, Any]
    partials: list[str] = field(default_factory=list)
    distinct: list[str] = field(default_factory=list)
    sketch: list[str] = field(default_factory=list)


def _realtime_parts(
    params: dict[str, Any], versions: Sequence[MeterVersion], start: datetime, end: datetime
) -> _Parts:
    parts = _Parts(params)
    hours, raw_edges = edges(start, end)
    if hours is not None:
        params["hours_start"], params["hours_end"] = hours
        where = (
            "WHERE customer_id = %(customer)s AND metric_key = %(metric)s "
            "AND bucket_start >= %(hours_start)s AND bucket_start < %(hours_end)s"
        )
        parts.partials.append(
            "SELECT version, group_values, event_count, digest_sum, total, smallest, largest, "
            f"last_timestamp, last_key, last_value FROM usage_rollups {where}"
        )
        parts.distinct.append(
            f"SELECT version, group_values, value_text FROM usage_rollup_distinct {where}"
        )
        parts.sketch.append(
            f"SELECT version, group_values, sign, bin, event_count FROM usage_rollup_sketch {where}"
        )
    for index, (edge_start, edge_end) in enumerate(raw_edges):
        for version in versions:
            window = window_of(version, edge_start, edge_end)
            if window is None:
                continue
            source, group_sql, unique = version_rows(
                version,
                params,
                f"e{index}v{version.version}",
                where=["customer_id = %(customer)s", "metric_key = %(metric)s"],
                window=window,
            )
            parts.partials.append(
                f"SELECT {version.version}, {group_sql} AS grp, {partial_columns(version)} {source} GROUP BY grp"
            )
            if unique is not None:
                parts.distinct.append(
                    f"SELECT {version.version}, {group_sql}, {unique} {source} AND {unique} IS NOT NULL"
                )
            if version.aggregation == Aggregation.PERCENTILE:
                parts.sketch.append(
                    f"SELECT {version.version}, {group_sql}, sign(value)::smallint, {BIN_SQL}, 1 {source}"
                )
    return parts


Partials = dict[tuple[int, tuple[str | None, ...]], Partial]


def _merged_partials(connection: Connection, parts: _Parts) -> Partials:
    statement = (
        "SELECT version, group_values, sum(event_count), sum(digest_sum), sum(total), min(smallest), "
        f"max(largest), max(last_timestamp), (array_agg(last_key {PART_LAST_ORDER}))[1], "
        f"(array_agg(last_value {PART_LAST_ORDER}))[1] "
        f"FROM ({' UNION ALL '.join(parts.partials)}) AS parts(version, group_values, event_count, digest_sum, "
        "total, smallest, largest, last_timestamp, last_key, last_value) GROUP BY version, group_values"
    )
    partials: Partials = {}
    for row in connection.exec_driver_sql(statement, parts.params):
        partial = _partial(row)
        partials[(partial.version, partial.group)] = partial
    return partials


def _merge_distinct(connection: Connection, parts: _Parts, partials: Partials) -> Partial:
    """Distinct counts per group into `partials`; returns the overall distinct count."""
    statement = (
        "SELECT version, group_values, count(DISTINCT value_text), GROUPING(version, group_values) "
        f"FROM ({' UNION ALL '.join(parts.distinct)}) AS parts(version, group_values, value_text) "
        "GROUP BY GROUPING SETS ((version, group_values), ())"
    )
    overall = Partial(0, ())
    for version, group, distinct, is_overall in connection.exec_driver_sql(statement, parts.params):
        if is_overall:
            overall.distinct = int(distinct)
        elif (int(version), tuple(group)) in partials:
            partials[(int(version), tuple(group))].distinct = int(distinct)
    return overall


def _merge_sketch(connection: Connection, parts: _Parts, partials: Partials) -> None:
    statement = (
        "SELECT version, group_values, sign, bin, sum(event_count) "
        f"FROM ({' UNION ALL '.join(parts.sketch)}) AS parts(version, group_values, sign, bin, event_count) "
        "GROUP BY version, group_values, sign, bin"
    )
    for version, group, sign, index, count in connection.exec_driver_sql(statement, parts.params):
        found = partials.get((int(version), tuple(group)))
        if found is not None:
            found.bins[(int(sign), int(index))] = int(count)


def realtime(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    versions: Sequence[MeterVersion],
    start: datetime,
    end: datetime,
) -> ScanResult:
    """Usage from rollups of the whole hours in [start, end) merged with a raw scan of the
    partial hours at the edges: time proportional to buckets (and distinct values, for
    unique_count), not events. Percentiles come from the sketch: approximate."""
    in_window = [v for v in versions if window_of(v, start, end) is not None]
    if not in_window:
        return _result([], {}, None)
    params: dict[str, Any] = {
        "customer": customer_id,
        "metric": metric_key,
        "ln_gamma": SKETCH_LN_GAMMA,
    }
    parts = _realtime_parts(params, in_window, start, end)
    aggregations = {v.aggregation for v in in_window}
    partials = _merged_partials(connection, parts) if parts.partials else {}
    overall = None
    if parts.distinct and Aggregation.UNIQUE_COUNT in aggregations:
        overall = _merge_distinct(connection, parts, partials)
    if parts.sketch and Aggregation.PERCENTILE in aggregations:
        _merge_sketch(connection, parts, partials)
    approximate = Aggregation.PERCENTILE in aggregations
    return _result(in_window, partials, overall, approximate=approximate)


def metric_keys(
    connection: Connection, *, customer_id: str, start: datetime, end: datetime
) -> list[str]:
    """The metrics a customer has events for in [start, end)."""
    rows = connection.exec_driver_sql(
        "SELECT DISTINCT metric_key FROM events WHERE customer_id = %(customer)s AND timestamp >= %(start)s AND timestamp < %(end)s ORDER BY 1",
        {"customer": customer_id, "start": start, "end": end},
    )
    return [str(key) for (key,) in rows]


def realtime_metric_keys(
    connection: Connection, *, customer_id: str, start: datetime, end: datetime
) -> list[str]:
    """The metrics a customer has usage for in [start, end), from rollups (whole hours)
    and the raw edges."""
    hours, raw_edges = edges(start, end)
    params: dict[str, Any] = {"customer": customer_id}
    parts = []
    if hours is not None:
        params["hours_start"], params["hours_end"] = hours
        parts.append(
            "SELECT DISTINCT metric_key FROM usage_rollups WHERE customer_id = %(customer)s "
            "AND bucket_start >= %(hours_start)s AND bucket_start < %(hours_end)s"
        )
    for index, (edge_start, edge_end) in enumerate(raw_edges):
        params[f"e{index}_start"], params[f"e{index}_end"] = edge_start, edge_end
        parts.append(
            "SELECT DISTINCT metric_key FROM events WHERE customer_id = %(customer)s "
            f"AND timestamp >= %(e{index}_start)s AND timestamp < %(e{index}_end)s"
        )
    rows = connection.exec_driver_sql(f"{' UNION '.join(parts)} ORDER BY 1", params)
    return [str(key) for (key,) in rows]


def event_counts(
    connection: Connection,
    customer_id: str,
    metric_keys: Sequence[str],
    start: datetime,
    end: datetime,
) -> dict[str, int]:
    """Stored events of the customer per metric in [start, end): an index-only count (what
    a draft's inputs fingerprint compares; events are insert-only)."""
    rows = connection.exec_driver_sql(
        "SELECT metric_key, count(*) FROM events WHERE customer_id = %(c)s "
        "AND metric_key = ANY(%(m)s) AND timestamp >= %(s)s AND timestamp < %(e)s "
        "GROUP BY metric_key",
        {"c": customer_id, "m": list(metric_keys), "s": start, "e": end},
    )
    return {str(key): int(count) for key, count in rows}


def excluded_count(
    connection: Connection,
    *,
    exact: bool,
    customer_id: str,
    metric_key: str,
    versions: Sequence[MeterVersion],
    start: datetime,
    end: datetime,
) -> int:
    """How many events of [start, end) the filters of the versions in force exclude: stored,
    not counted (API.md §18, `excluded_events`). Exact: from the events. Real time: whole
    hours from usage_rollup_excluded (written by the fold) and the partial hours raw."""
    params: dict[str, Any] = {"customer": customer_id, "metric": metric_key}
    where = ["customer_id = %(customer)s", "metric_key = %(metric)s"]
    parts = []
    for index, version in enumerate(versions):
        window = window_of(version, start, end)
        if window is None or not version.filters:
            continue
        lower, upper = window[0], window[1] or end
        if exact:
            hours, raw_edges = None, [(lower, upper)]
        else:
            hours, raw_edges = edges(lower, upper)
        if hours is not None:
            params[f"h{index}_start"], params[f"h{index}_end"] = hours
            parts.append(
                "SELECT coalesce(sum(event_count), 0) AS n FROM usage_rollup_excluded "
                f"WHERE customer_id = %(customer)s AND metric_key = %(metric)s "
                f"AND version = {version.version} AND bucket_start >= %(h{index}_start)s "
                f"AND bucket_start < %(h{index}_end)s"
            )
        for edge_index, edge in enumerate(raw_edges):
            source = excluded_rows(
                version, params, f"v{index}e{edge_index}", where=where, window=edge
            )
            if source is not None:
                parts.append(f"SELECT count(*) AS n {source}")
    if not parts:
        return 0
    union = " UNION ALL ".join(parts)
    return int(
        connection.exec_driver_sql(
            f"SELECT coalesce(sum(n), 0) FROM ({union}) AS parts",
            params,
        ).scalar_one()
    )


def changed_events(
    connection: Connection,
    *,
    customer_id: str,
    metric_key: str,
    start: datetime,
    end: datetime,
    before: Sequence[MeterVersion],
    after: Sequence[MeterVersion],
    new_in_after: str | None,
) -> tuple[list[str], list[str]]:
    """The content hashes of a customer's events of [start, end) that count after a
    correction changed and did not before (added), and those that counted before and no
    longer do (superseded): the meters as they were and are (filters, versions and every
    correction), compared as multisets. `new_in_after`: a correction whose events were
    just moved in (they did not exist before)."""
    params: dict[str, Any] = {"customer": customer_id, "metric": metric_key}
    where = ["customer_id = %(customer)s", "metric_key = %(metric)s"]

    def counted(versions: Sequence[MeterVersion], prefix: str, extra: list[str]) -> str:
        selects = []
        for version in versions:
            window = window_of(version, start, end)
            if window is None:
                continue
            source, _, _ = version_rows(
                version, params, f"{prefix}{version.version}", where=[*where, *extra], window=window
            )
            selects.append(f"SELECT content_sha256 {source}")
        return " UNION ALL ".join(selects) or "SELECT NULL::text WHERE false"

    earlier = []
    if new_in_after is not None:
        params["new_in_after"] = new_in_after
        earlier = ["correction_id IS DISTINCT FROM %(new_in_after)s"]
    was = counted(before, "b", earlier)
    now = counted(after, "a", [])
    added = connection.exec_driver_sql(f"({now}) EXCEPT ALL ({was})", params)
    added_hashes = [str(sha) for (sha,) in added]
    gone = connection.exec_driver_sql(f"({was}) EXCEPT ALL ({now})", params)
    return added_hashes, [str(sha) for (sha,) in gone]
