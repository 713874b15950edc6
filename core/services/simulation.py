"""Price-change simulation (API.md §11, `POST /v1/price-plans/{code}/simulate`): what
candidate charges would have billed over the last N invoiced periods of every subscription
on a plan, against what those periods were billed — from the same exact usage and the
same pricing functions as invoices. Nothing is stored or changed.

What a period was billed: its binding invoice's period charges — usage and fees, then its
commitment and discount lines — plus the late-usage and correction adjustments later
recorded for it (their commitment and discount differences included). What it would have
billed: the candidate charges' lines through the same commitments and discounts steps of
invoice assembly, with the period's commitment and the discounts its invoice applied. So
simulating the current charges gives back exactly what was billed (usage as it stands
now, priced and assembled as invoices are). Each subscription keeps its overrides where
they name a candidate charge (by name or metric)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from core.adapters.postgres import invoices as invoice_rows
from core.adapters.postgres import plans as plan_rows
from core.adapters.postgres.database import get_database
from core.domain.errors import FieldError, NotFound, ValidationFailed
from core.domain.invoices.assembly import (
    AssemblyInputs,
    assemble,
    commitments,
    discounts,
    usage_and_fees,
)
from core.domain.invoices.commitments import Commitment
from core.domain.money import round_to_currency
from core.domain.periods import Period
from core.domain.pricing.charges import CHARGE_ADAPTER, PlanVersionDefinition, PriceSimulation
from core.services import pricing
from core.services.catalog import coupons
from core.services.catalog.plans import check_references

# Invoiced periods (subscriptions times periods) priced in one call, each an exact scan
# per metric charge: beyond it the request is refused, naming the bound.
SIMULATION_PERIODS_PRICED_MAX = 2000
PERIOD_LINES = frozenset({"usage", "commitment", "discount"})


def simulate(plan_code: str, body: PriceSimulation) -> dict[str, Any]:
    with get_database().transaction() as connection:
        plan = plan_rows.get(connection, plan_code)
        if plan is None:
            raise NotFound(f"no price plan {plan_code!r}", code="unknown_plan")
        latest = plan_rows.version(
            connection, plan_code, plan_rows.latest_version_number(connection, plan_code)
        )
        assert latest is not None  # a plan has a version 1
        definition = PlanVersionDefinition(
            name=latest["name"],
            currency=latest["currency"],
            interval=latest["interval"],
            charges=list(body.charges),
        )
        check_references(connection, definition)
        candidate = [CHARGE_ADAPTER.dump_python(c, mode="json") for c in body.charges]
        billed = invoice_rows.latest_binding_of_plan(connection, plan_code, body.periods)
        if len(billed) > SIMULATION_PERIODS_PRICED_MAX:
            raise ValidationFailed(
                f"{len(billed)} invoiced periods to price; a simulation prices at most "
                f"{SIMULATION_PERIODS_PRICED_MAX}: ask for fewer `periods`",
                code="simulation_too_large",
                errors=[FieldError(("body", "periods"), "too many periods to price at once")],
            )
        customers: dict[str, dict[str, Any]] = {}
        for invoice in billed:
            period = _period(connection, invoice, candidate, latest["currency"])
            entry = customers.setdefault(
                invoice["customer_id"],
                {"customer_id": invoice["customer_id"], "periods": []},
            )
            entry["periods"].append(period)
    shown = [entry | _sums(entry["periods"]) for entry in customers.values()]
    return {
        "plan_code": plan_code,
        "periods": body.periods,
        "currency": latest["currency"],
        "customers": shown,
        "total": _sums([p for c in shown for p in c["periods"]]),
    }


def _period(
    connection: Any, invoice: dict[str, Any], candidate: list[dict[str, Any]], currency: str
) -> dict[str, Any]:
    context = pricing.context_for(
        connection,
        invoice["subscription_id"],
        Period(invoice["period_start"], invoice["period_end"]),
    )
    names = {c.get("name") for c in candidate} | {c.get("metric_key") for c in candidate}
    overrides = [
        o
        for o in context.subscription["overrides"]
        if (o.get("charge") or o.get("metric_key")) in names - {None}
    ]
    simulated_context = replace(
        context,
        plan={**context.plan, "charges": candidate},
        subscription={**context.subscription, "overrides": overrides},
    )
    priced = pricing.compute(connection, simulated_context)
    assembled = assemble(
        AssemblyInputs(
            currency=currency,
            usage_lines=tuple(priced["lines"]),
            commitment=Commitment.of(priced.get("commitment")),
            discounts=coupons.discounts_of_invoice(connection, invoice),
        ),
        steps=(usage_and_fees, commitments, discounts),
    )
    simulated = assembled.subtotal
    invoiced = sum(
        (Decimal(line["amount"]) for line in invoice["lines"] if line["type"] in PERIOD_LINES),
        Decimal(0),
    )
    billed = round_to_currency(invoiced + Decimal(invoice["adjusted"]), currency)
    simulated = round_to_currency(simulated, currency)
    return {
        "subscription_id": invoice["subscription_id"],
        "invoice_id": invoice["id"],
        "period": {"start": invoice["period_start"], "end": invoice["period_end"]},
        "invoiced": invoiced,
        "adjusted": Decimal(invoice["adjusted"]),
        "billed": billed,
        "simulated": simulated,
        "delta": simulated - billed,
    }


def _sums(periods: list[dict[str, Any]]) -> dict[str, Any]:
    billed = sum((p["billed"] for p in periods), Decimal(0))
    simulated = sum((p["simulated"] for p in periods), Decimal(0))
    return {"billed": billed, "simulated": simulated, "delta": simulated - billed}
