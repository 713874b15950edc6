"""Price plans: immutable versions of a set of charges. A subscription pins a version;
a new version never changes what existing subscriptions pay."""

from __future__ import annotations

from typing import Any

from core.adapters.postgres import plans as rows
from core.adapters.postgres.database import get_database
from core.domain.canonical import sha256_of
from core.domain.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.domain.money import minor_units
from core.domain.pricing.charges import CHARGE_ADAPTER, Matrix, PlanVersionDefinition
from core.services import audit
from core.services.caller import Caller
from core.services.catalog.archiving import archive
from core.services.catalog.metrics import check_usable
from core.services.listing import paginate


def _stored(definition: PlanVersionDefinition) -> dict[str, Any]:
    """The version's definition as stored and checksummed (terms only when it has some, so
    a plan without terms keeps the checksum it always had)."""
    stored = {
        "name": definition.name,
        "currency": definition.currency,
        "interval": definition.interval.value,
        "charges": [CHARGE_ADAPTER.dump_python(c, mode="json") for c in definition.charges],
    }
    terms = definition.terms()
    return stored | ({"terms": terms} if terms else {})


def view(plan: dict[str, Any], version: dict[str, Any], versions: list[int]) -> dict[str, Any]:
    return {
        "code": plan["code"],
        "version": version["version"],
        "name": version["name"],
        "currency": version["currency"],
        "currency_minor_units": minor_units(version["currency"]),
        "interval": version["interval"],
        "charges": version["charges"],
        **_terms_view(version["terms"]),
        "definition_sha256": version["definition_sha256"],
        "versions": versions,
        "created_at": version["created_at"],
        "archived_at": plan["archived_at"],
    }


def _terms_view(terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "trial_days": terms.get("trial_days"),
        "trial_bills_usage": bool(terms.get("trial_bills_usage", False)),
        "minimum_commitment": terms.get("minimum_commitment"),
        "maximum_charge": terms.get("maximum_charge"),
    }


def check_references(connection: Any, definition: PlanVersionDefinition) -> None:
    references = [
        (("body", "charges", index, "metric_key"), charge.metric_key)
        for index, charge in enumerate(definition.charges)
        if hasattr(charge, "metric_key")
    ]
    usable = check_usable(connection, references)
    problems = []
    for index, charge in enumerate(definition.charges):
        if not isinstance(charge, Matrix):
            continue
        group_by = set(usable[charge.metric_key]["group_by"])
        if not group_by:
            problems.append(
                FieldError(
                    ("body", "charges", index, "metric_key"),
                    f"matrix pricing needs a metric with group_by; {charge.metric_key!r} has none",
                )
            )
        for row_index, price in enumerate(charge.prices):
            unknown = sorted(set(price.match) - group_by)
            if unknown:
                problems.append(
                    FieldError(
                        ("body", "charges", index, "prices", row_index, "match"),
                        f"{unknown} not in the metric's group_by {sorted(group_by)}",
                    )
                )
    if problems:
        raise ValidationFailed(
            "matrix charges do not fit their metrics", code="invalid_matrix", errors=problems
        )


def _insert_version(
    connection: Any, code: str, number: int, definition: PlanVersionDefinition
) -> None:
    stored = _stored(definition)
    rows.insert_version(
        connection,
        {"plan_code": code, "version": number, **stored, "definition_sha256": sha256_of(stored)},
    )


def create_plan(caller: Caller, code: str, definition: PlanVersionDefinition) -> dict[str, Any]:
    with get_database().transaction() as connection:
        check_references(connection, definition)
        if not rows.insert_plan(connection, code):
            raise Conflict(
                f"price plan {code!r} exists (codes are never reused); add a version instead",
                code="plan_exists",
            )
        _insert_version(connection, code, 1, definition)
        result = _load(connection, code, None)
        audit.record(
            connection,
            caller,
            action="price_plan.created",
            entity="price_plan",
            entity_id=code,
            state=result,
        )
    return result


def add_version(caller: Caller, code: str, definition: PlanVersionDefinition) -> dict[str, Any]:
    with get_database().transaction() as connection:
        plan = rows.lock(connection, code)
        if plan is None:
            raise NotFound(f"no price plan {code!r}")
        if plan["archived_at"] is not None:
            raise Conflict(f"price plan {code!r} is archived", code="plan_archived")
        check_references(connection, definition)
        number = rows.latest_version_number(connection, code) + 1
        _insert_version(connection, code, number, definition)
        result = _load(connection, code, number)
        audit.record(
            connection,
            caller,
            action="price_plan.version_created",
            entity="price_plan",
            entity_id=code,
            state=result,
        )
    return result


def archive_plan(caller: Caller, code: str) -> dict[str, Any]:
    return archive(
        caller,
        entity="price_plan",
        entity_id=code,
        lock=lambda connection: rows.lock(connection, code),
        mark=lambda connection, at: rows.archive(connection, code, at),
        load=lambda connection: _load(connection, code, None),
    )


def get_plan(code: str, version: int | None = None) -> dict[str, Any]:
    with get_database().transaction() as connection:
        return _load(connection, code, version)


def list_plans(*, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        page, next_cursor = paginate(
            lambda after, n: rows.page(connection, after=after, limit=n),
            cursor=cursor,
            limit=limit,
            key="code",
        )
        return [_load(connection, plan["code"], None) for plan in page], next_cursor


def _load(connection: Any, code: str, number: int | None) -> dict[str, Any]:
    plan = rows.get(connection, code)
    if plan is None:
        raise NotFound(f"no price plan {code!r}")
    numbers = rows.version_numbers(connection, code)
    version = rows.version(connection, code, number if number is not None else numbers[-1])
    if version is None:
        raise NotFound(f"price plan {code!r} has no version {number}", code="unknown_plan_version")
    return view(plan, version, numbers)
