"""Assembling an invoice: its lines and totals from one calculation of its period and the
adjustments it carries.

Assembly is a pipeline of pure steps in one documented order (docs/concepts.md, "How an
invoice is assembled"):

    usage and fees → commitments → discounts → taxes → credits

Each step takes the lines assembled so far and the assembly's inputs, and returns the
lines with its own appended; nothing else decides an invoice's content:

1. usage and fees: this period's priced charges (a calculation's lines), then the
   adjustments the invoice carries (late usage of earlier periods priced under their own
   versions, manual corrections, credit carried forward, credit notes, reversals);
2. commitments (`commitments.py`): the period's minimum true-up or maximum cap;
3. discounts (`discounts.py`): the subscription's discounts in force for the period.

Taxes and prepaid credits are the next steps (API.md §14, §15). Steps 2 and 3 see only
the period's own charges, never the carried adjustments: a commitment or a coupon of this
period does not apply to what an earlier period owed.

Every amount in a line is the normalized decimal text of an exact Decimal, so the same
inputs give the same canonical JSON, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.domain.canonical import decimal_text
from core.domain.invoices.commitments import Commitment, commitment_lines
from core.domain.invoices.discounts import AppliedDiscount, discount_lines

ZERO = Decimal(0)
Line = dict[str, Any]


@dataclass(frozen=True)
class CarriedAdjustment:
    """A pending adjustment as an invoice carries it."""

    id: str
    kind: str
    description: str
    amount: Decimal
    original_invoice_id: str | None = None
    metric_key: str | None = None
    meter_version: int | None = None
    quantity: Decimal | None = None


@dataclass(frozen=True)
class AssemblyInputs:
    """Everything an invoice's content is made of. `usage_lines` are a calculation's priced
    lines (JSON values, as stored); `adjustments` in the order they are carried."""

    currency: str
    usage_lines: tuple[Mapping[str, Any], ...] = ()
    adjustments: tuple[CarriedAdjustment, ...] = ()
    commitment: Commitment | None = None
    discounts: tuple[AppliedDiscount, ...] = ()


@dataclass(frozen=True)
class Assembly:
    lines: tuple[Line, ...]
    subtotal: Decimal
    total: Decimal  # what is due: never below zero
    credit_carried: Decimal  # what a negative subtotal leaves for the next invoice


Step = Callable[[tuple[Line, ...], AssemblyInputs], tuple[Line, ...]]


def usage_and_fees(lines: tuple[Line, ...], inputs: AssemblyInputs) -> tuple[Line, ...]:
    """This period's priced charges, then the adjustments the invoice carries."""
    usage = tuple({**line, "type": "usage"} for line in inputs.usage_lines)
    carried = tuple(adjustment_line(adjustment) for adjustment in inputs.adjustments)
    return lines + usage + carried


PERIOD_CHARGES = frozenset({"usage", "commitment"})


def _amount(lines: Sequence[Mapping[str, Any]]) -> Decimal:
    return sum((Decimal(str(line["amount"])) for line in lines), ZERO)


def commitments(lines: tuple[Line, ...], inputs: AssemblyInputs) -> tuple[Line, ...]:
    """The period's minimum true-up or maximum cap, on its usage and fee lines."""
    charges = _amount([line for line in lines if line.get("type") == "usage"])
    return lines + tuple(commitment_lines(charges, inputs.commitment, inputs.currency))


def discounts(lines: tuple[Line, ...], inputs: AssemblyInputs) -> tuple[Line, ...]:
    """The discounts in force, on the period's charges after commitments."""
    period = [line for line in lines if line.get("type") in PERIOD_CHARGES]
    return lines + tuple(discount_lines(period, inputs.discounts, inputs.currency))


ASSEMBLY_ORDER: tuple[Step, ...] = (usage_and_fees, commitments, discounts)


def adjustment_line(adjustment: CarriedAdjustment) -> Line:
    return {
        "type": "adjustment",
        "adjustment_id": adjustment.id,
        "kind": adjustment.kind,
        "description": adjustment.description,
        "original_invoice_id": adjustment.original_invoice_id,
        "metric_key": adjustment.metric_key,
        "meter_version": adjustment.meter_version,
        "quantity": None if adjustment.quantity is None else decimal_text(adjustment.quantity),
        "amount": decimal_text(adjustment.amount),
    }


def assemble(inputs: AssemblyInputs, steps: Sequence[Step] = ASSEMBLY_ORDER) -> Assembly:
    """Run the steps in order, number the lines 1..n, and total them: `subtotal` is the
    sum of the lines; `total` is the subtotal when positive, else 0 with the rest carried
    as credit."""
    lines: tuple[Line, ...] = ()
    for step in steps:
        lines = step(lines, inputs)
    numbered = tuple(
        {"line": number, **{k: v for k, v in line.items() if k != "line"}}
        for number, line in enumerate(lines, start=1)
    )
    subtotal = sum((Decimal(str(line["amount"])) for line in numbered), ZERO)
    return Assembly(
        lines=numbered,
        subtotal=subtotal,
        total=max(subtotal, ZERO),
        credit_carried=max(-subtotal, ZERO),
    )


def carried_ids(lines: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The adjustments an assembled invoice carries, in line order."""
    return tuple(str(line["adjustment_id"]) for line in lines if line.get("type") == "adjustment")


def usage_lines(lines: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(line for line in lines if line.get("type") == "usage")
