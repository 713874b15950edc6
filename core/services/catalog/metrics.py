"""Metrics: versioned meter definitions. Keys are unique forever; versions are immutable
and time-bounded; archive is soft."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from core.adapters.postgres import metrics as rows
from core.adapters.postgres.database import get_database
from core.domain.contracts import Contract, event_schema, odcs_document, require_owner
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.metrics import MetricDefinition, MetricVersionDefinition, effective_to
from core.services import aggregation, audit
from core.services.caller import Caller
from core.services.catalog.archiving import archive
from core.services.listing import paginate

VERSION_FIELDS = (
    "name",
    "unit",
    "aggregation",
    "unique_property",
    "percentile",
    "filters",
    "group_by",
    "effective_from",
    "contract",
)


def _version_view(versions: list[dict[str, Any]], index: int) -> dict[str, Any]:
    row = versions[index]
    starts = [v["effective_from"] for v in versions]
    return {
        "version": row["version"],
        **{name: row[name] for name in VERSION_FIELDS},
        "group_by": list(row["group_by"]),
        "effective_to": effective_to(starts, index),
        "created_at": row["created_at"],
    }


def view(
    metric: dict[str, Any], versions: list[dict[str, Any]], now: datetime | None = None
) -> dict[str, Any]:
    """The metric with its current version's definition (the one in force now, or the
    first if none is yet) and every version with its [effective_from, effective_to)."""
    now = now or datetime.now(UTC)
    rendered = [_version_view(versions, index) for index in range(len(versions))]
    in_force = [v for v in rendered if v["effective_from"] <= now]
    current = in_force[-1] if in_force else rendered[0]
    contract = current["contract"] or {}
    return {
        "key": metric["key"],
        **{k: v for k, v in current.items() if k != "created_at"},
        "owner": contract.get("owner"),
        "producers": contract.get("producers"),
        "created_at": metric["created_at"],
        "archived_at": metric["archived_at"],
        "versions": rendered,
    }


def _version_values(key: str, number: int, definition: MetricVersionDefinition) -> dict[str, Any]:
    return {
        "metric_key": key,
        "version": number,
        "name": definition.name,
        "unit": definition.unit,
        "aggregation": definition.aggregation.value,
        "unique_property": definition.unique_property,
        "percentile": definition.percentile,
        "filters": definition.filters,
        "group_by": definition.group_by,
        "effective_from": definition.effective_from,
        "contract": None
        if definition.contract is None
        else definition.contract.model_dump(mode="json", exclude_none=True),
    }


def create_metric(caller: Caller, definition: MetricDefinition) -> dict[str, Any]:
    with get_database().transaction() as connection:
        if not rows.insert_metric(connection, definition.key):
            raise Conflict(
                f"metric {definition.key!r} exists (keys are never reused)", code="metric_exists"
            )
        rows.insert_version(connection, _version_values(definition.key, 1, definition))
        result = _load(connection, definition.key)
        audit.record(
            connection,
            caller,
            action="metric.created",
            entity="metric",
            entity_id=definition.key,
            state=result,
        )
    return result


def add_version(caller: Caller, key: str, definition: MetricVersionDefinition) -> dict[str, Any]:
    with get_database().transaction() as connection:
        metric = rows.lock(connection, key)
        if metric is None:
            raise NotFound(f"no metric {key!r}")
        if metric["archived_at"] is not None:
            raise Conflict(f"metric {key!r} is archived", code="metric_archived")
        existing = rows.versions(connection, [key])[key]
        latest = existing[-1]
        require_owner(caller.scopes, caller.team, key, existing, "add a version")
        if definition.effective_from <= latest["effective_from"]:
            raise Conflict(
                f"a new version must start after version {latest['version']} "
                f"(effective_from {latest['effective_from'].isoformat()})",
                code="version_out_of_order",
                errors=[
                    FieldError(("body", "effective_from"), "not after the latest version's start")
                ],
            )
        closed = rows.closed_until(connection, key)
        if closed is not None and definition.effective_from < closed:
            raise Conflict(
                f"a version starting {definition.effective_from.isoformat()} would change an "
                f"issued invoice (invoiced through {closed.isoformat()}); late changes are "
                "adjustments",
                code="would_change_closed_invoice",
                errors=[FieldError(("body", "effective_from"), f"must be >= {closed.isoformat()}")],
            )
        rows.insert_version(connection, _version_values(key, latest["version"] + 1, definition))
        # Events from effective_from on now count under the new version: the rollups from
        # that hour on are rebuilt (in this commit's queue, by the aggregator).
        aggregation.request_refold(connection, key, definition.effective_from)
        result = _load(connection, key)
        audit.record(
            connection,
            caller,
            action="metric.version_created",
            entity="metric",
            entity_id=key,
            state=result,
        )
    return result


def archive_metric(caller: Caller, key: str) -> dict[str, Any]:
    return archive(
        caller,
        entity="metric",
        entity_id=key,
        lock=lambda connection: rows.lock(connection, key),
        mark=lambda connection, at: rows.archive(connection, key, at),
        load=lambda connection: _load(connection, key),
    )


def _contract_of(row: dict[str, Any]) -> Contract | None:
    return None if row["contract"] is None else Contract.model_validate(row["contract"])


def version_schema(key: str, number: int) -> dict[str, Any]:
    """The JSON Schema of a whole event of version `number` (API.md §18)."""
    with get_database().transaction() as connection:
        if rows.get(connection, key) is None:
            raise NotFound(f"no metric {key!r}")
        found = [v for v in rows.versions(connection, [key])[key] if v["version"] == number]
    if not found:
        raise NotFound(f"metric {key!r} has no version {number}")
    return event_schema(key, number, _contract_of(found[0]))


def odcs_contract(key: str, schema_url: str) -> str:
    """The metric's contract in force, as an ODCS v3 YAML document. `schema_url` is where
    the JSON Schema of its version is published ({version} is filled in)."""
    with get_database().transaction() as connection:
        shown = _load(connection, key)
        current = next(
            v for v in rows.versions(connection, [key])[key] if v["version"] == shown["version"]
        )
    document = odcs_document(
        metric_key=key,
        name=shown["name"],
        unit=shown["unit"],
        version=shown["version"],
        contract=_contract_of(current),
        archived=shown["archived_at"] is not None,
        schema_url=schema_url.format(version=shown["version"]),
    )
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def get_metric(key: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        return _load(connection, key)


def list_metrics(*, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(connection, after=after, limit=n),
            cursor=cursor,
            limit=limit,
            key="key",
        )
        versions = rows.versions(connection, [m["key"] for m in page])
    return [view(m, versions[m["key"]]) for m in page], next_cursor


def _load(connection: Any, key: str) -> dict[str, Any]:
    metric = rows.get(connection, key)
    if metric is None:
        raise NotFound(f"no metric {key!r}")
    return view(metric, rows.versions(connection, [key])[key])


def usable_metrics(connection: Any, keys: set[str]) -> dict[str, dict[str, Any]]:
    """Latest version of each key that exists and is not archived (for new plans)."""
    found: dict[str, dict[str, Any]] = {}
    versions = rows.versions(connection, sorted(keys))
    for key in keys:
        metric = rows.get(connection, key)
        if metric is not None and metric["archived_at"] is None and versions[key]:
            found[key] = versions[key][-1]
    return found


def check_usable(
    connection: Any, keys_by_location: Sequence[tuple[Sequence[str | int], str]]
) -> dict[str, dict[str, Any]]:
    """Raise unknown_metric naming every reference to a missing or archived metric."""
    usable = usable_metrics(connection, {key for _, key in keys_by_location})
    missing = [
        FieldError(tuple(loc), f"unknown or archived metric {key!r}")
        for loc, key in keys_by_location
        if key not in usable
    ]
    if missing:
        raise ValidationFailed(
            "the plan names metrics that do not exist or are archived",
            code="unknown_metric",
            errors=missing,
        )
    return usable
