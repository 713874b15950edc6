"""What voiding a binding invoice does to the adjustments around it, so that every unit of
usage and every credit is counted once across the voided invoice and its replacement.

- Adjustments the voided invoice **carried** are released: pending again, the next
  invoice (often its replacement) carries them. Its own `void_credit` stays with it.
- Adjustments **born of** its content — late usage of its period, the credit its
  negative subtotal carried forward — no longer stand on anything: still pending, they
  are cancelled (never billed); already billed by another binding invoice, they get a
  `reversal` (the negated adjustment, pending), which the next invoice carries.
- Manual adjustments that merely name the invoice stay as they are: an operator decided
  them, not the invoice's content.

A draft holds no adjustments (a draft only shows what it would carry), so voiding a
draft changes none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BORN_OF_CONTENT = frozenset({"late_usage", "correction", "credit_carried"})
STAYS_WITH_VOIDED = frozenset({"void_credit"})


@dataclass(frozen=True)
class AdjustmentState:
    id: str
    kind: str
    original_invoice_id: str | None
    applied_invoice_id: str | None
    cancelled: bool
    carrier_binding: bool  # the invoice carrying it is binding (issued, paid or failed)


@dataclass(frozen=True)
class VoidPlan:
    release: tuple[str, ...]
    cancel: tuple[str, ...]
    reverse: tuple[str, ...]


def void_plan(invoice_id: str, adjustments: Sequence[AdjustmentState]) -> VoidPlan:
    """`adjustments`: every adjustment carried by or born of the invoice being voided."""
    release, cancel, reverse = [], [], []
    for adjustment in adjustments:
        if adjustment.cancelled:
            continue
        if adjustment.applied_invoice_id == invoice_id:
            if adjustment.kind not in STAYS_WITH_VOIDED:
                release.append(adjustment.id)
            continue
        if adjustment.original_invoice_id != invoice_id:
            continue
        if adjustment.kind not in BORN_OF_CONTENT:
            continue
        if adjustment.applied_invoice_id is None:
            cancel.append(adjustment.id)
        elif adjustment.carrier_binding:
            reverse.append(adjustment.id)
    return VoidPlan(tuple(release), tuple(cancel), tuple(reverse))
