"""Customers: client-chosen ids (the ids events carry), changes audited with before/after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.adapters.postgres import customers as rows
from core.adapters.postgres.database import get_database
from core.config import settings
from core.domain.customers import CustomerFields, NewCustomer
from core.domain.errors import Conflict, FieldError, NotFound, WrongRegion
from core.domain.validation import validated
from core.services import audit
from core.services.caller import Caller
from core.services.catalog.archiving import archive
from core.services.listing import paginate


def _homed_here(region: str | None) -> None:
    """With residency zones, a central keeps the customers of its own zone only (API.md §10:
    each zone has its own central): a home in another zone is refused, naming it."""
    config = settings()
    zones = config.residency_zones
    if region is None or not zones or config.abaxus_role == "region":
        return
    home_zone = zones.get(region, region)
    if home_zone != config.zone:
        raise WrongRegion(
            f"a customer homed in {region} belongs to the central of zone {home_zone!r} "
            f"(this central is zone {config.zone!r})",
            errors=[FieldError(("body", "region"), f"in zone {home_zone}")],
        )


def create_customer(caller: Caller, customer: NewCustomer) -> dict[str, Any]:
    _homed_here(customer.region)
    with get_database().transaction() as connection:
        row = rows.insert_customer(connection, customer.model_dump())
        if row is None:
            raise Conflict(f"customer {customer.id!r} exists", code="customer_exists")
        audit.record(
            connection,
            caller,
            action="customer.created",
            entity="customer",
            entity_id=customer.id,
            state=row,
        )
    return row


def change_customer(caller: Caller, customer_id: str, fields: CustomerFields) -> dict[str, Any]:
    """PATCH: the given fields replace the stored ones (metadata as a whole); a null
    clears an optional field. Audited with each changed field's before and after."""
    given = fields.model_dump(exclude_unset=True)
    if given.get("region"):
        _homed_here(given["region"])
    with get_database().transaction() as connection:
        before = rows.get(connection, customer_id, lock=True)
        if before is None:
            raise NotFound(f"no customer {customer_id!r}")
        if before["archived_at"] is not None:
            raise Conflict(f"customer {customer_id!r} is archived", code="customer_archived")
        if "name" in given and given["name"] is None:
            given.pop("name")
        if given.get("metadata", ...) is None:
            given["metadata"] = {}
        merged = {**before, **given}
        validated(NewCustomer, {k: merged[k] for k in NewCustomer.model_fields if k in merged})
        changes = {k: {"before": before[k], "after": v} for k, v in given.items() if before[k] != v}
        if not changes:
            return before
        after = rows.change(
            connection,
            customer_id,
            {**{k: c["after"] for k, c in changes.items()}, "updated_at": datetime.now(UTC)},
        )
        audit.record(
            connection,
            caller,
            action="customer.updated",
            entity="customer",
            entity_id=customer_id,
            state=after,
            changes=changes,
        )
    return after


def archive_customer(caller: Caller, customer_id: str) -> dict[str, Any]:
    return archive(
        caller,
        entity="customer",
        entity_id=customer_id,
        lock=lambda connection: rows.get(connection, customer_id, lock=True),
        mark=lambda connection, at: rows.archive(connection, customer_id, at),
        load=lambda connection: _existing(connection, customer_id),
    )


def _existing(connection: Any, customer_id: str) -> dict[str, Any]:
    row = rows.get(connection, customer_id)
    if row is None:
        raise NotFound(f"no customer {customer_id!r}")
    return row


def get_customer(customer_id: str) -> dict[str, Any]:
    with get_database().transaction() as connection:
        row = rows.get(connection, customer_id)
    if row is None:
        raise NotFound(f"no customer {customer_id!r}")
    return row


def list_customers(
    *, cursor: str | None, limit: int, search: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    with get_database().transaction() as connection:
        return paginate(
            lambda after, n: rows.page(connection, after=after, limit=n, search=search),
            cursor=cursor,
            limit=limit,
            key="id",
        )
