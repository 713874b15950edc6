"""The pricing engine, pure: an explicit registry from model to pricing function, and the
assembly of a calculation's lines — each line's amount computed at full precision and
rounded once (half-up, to the currency's minor units); subtotal and total are sums of the
rounded lines, so the lines always add up to the total exactly."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.domain.canonical import canonical_json
from core.domain.money import round_to_currency
from core.domain.pricing.models import (
    custom_formula,
    flat_fee,
    matrix,
    package,
    per_unit,
    tiered,
    volume,
)
from core.domain.pricing.priced import ZERO, Priced, Usage

PriceFunction = Callable[[Any, Usage], Priced]

REGISTRY: Mapping[str, PriceFunction] = {
    "per_unit": per_unit.price,
    "tiered": tiered.price,
    "volume": volume.price,
    "package": package.price,
    "flat_fee": flat_fee.price,
    "matrix": matrix.price,
    "custom_formula": custom_formula.price,
}


def price(charge: Any, usage: Usage) -> Priced:
    return REGISTRY[charge.model](charge, usage)


@dataclass(frozen=True)
class LineInput:
    """One line to price: a charge (overrides applied) and its exact usage."""

    charge: Any
    usage: Usage
    metric_key: str | None = None
    meter_version: int | None = None
    meter_versions: tuple[int, ...] = ()
    event_count: int = 0
    events_checksum: str | None = None


def line(number: int, item: LineInput, currency: str) -> dict[str, Any]:
    priced = price(item.charge, item.usage)
    return {
        "line": number,
        "charge": item.charge.label,
        "model": item.charge.model,
        "metric_key": item.metric_key,
        "meter_version": item.meter_version,
        "meter_versions": list(item.meter_versions),
        "quantity": item.usage.quantity if item.metric_key is not None else Decimal(1),
        "amount": round_to_currency(priced.amount, currency),
        "unrounded_amount": priced.amount,
        "breakdown": priced.breakdown,
        "event_count": item.event_count,
        "events_checksum": item.events_checksum,
        "charge_definition": item.charge.model_dump(mode="json", exclude_none=True),
    }


def lines(items: Sequence[LineInput], currency: str) -> tuple[list[dict[str, Any]], Decimal]:
    """The priced lines (numbered from 1) and their total."""
    priced = [line(number, item, currency) for number, item in enumerate(items, start=1)]
    return priced, sum((p["amount"] for p in priced), ZERO)


def sha256(value: Any) -> str:
    """SHA-256 of the canonical JSON of `value` (docs/concepts.md, "Canonical JSON")."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
