"""An invoice's states and the one table of the transitions between them.

```
draft ──issue──▶ issued ──charge ok──▶ paid
  │                │  ▲ └─charge fails─▶ payment_failed ──charge ok──▶ paid
  │                │  └───────────────────────┘ (a later attempt fails again: stays)
  └──void──▶ void ◀┴──void─────────────────────┘
```

Every question the services ask about a status is a predicate here, derived from
`TRANSITIONS`; the database's `abaxus_invoice_guard` trigger enforces the same table
(tests/integration/test_invoice_states.py tries every pair against it).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from core.domain.errors import Conflict


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    VOID = "void"


_S = InvoiceStatus

# What each state may become. Staying in a state is not a transition (a second failed
# attempt leaves a payment_failed invoice payment_failed; issuing an issued invoice
# again answers it unchanged).
TRANSITIONS: Mapping[InvoiceStatus, frozenset[InvoiceStatus]] = {
    _S.DRAFT: frozenset({_S.ISSUED, _S.VOID}),
    _S.ISSUED: frozenset({_S.PAID, _S.PAYMENT_FAILED, _S.VOID}),
    _S.PAYMENT_FAILED: frozenset({_S.PAID, _S.VOID}),
    _S.PAID: frozenset(),
    _S.VOID: frozenset(),
}

STATUSES: tuple[str, ...] = tuple(status.value for status in InvoiceStatus)


def allowed(current: InvoiceStatus | str, target: InvoiceStatus | str) -> bool:
    return InvoiceStatus(target) in TRANSITIONS[InvoiceStatus(current)]


def require(current: InvoiceStatus | str, target: InvoiceStatus | str, invoice_id: str) -> None:
    """Refuse a transition outside the table: `409 invoice_<current status>`."""
    if not allowed(current, target):
        raise Conflict(
            f"invoice {invoice_id} is {InvoiceStatus(current)}: it cannot become "
            f"{InvoiceStatus(target)}",
            code=f"invoice_{InvoiceStatus(current)}",
        )


def refreshable(status: InvoiceStatus | str) -> bool:
    """Its content may still change: only a draft is re-priced."""
    return allowed(status, _S.ISSUED)


def issuable(status: InvoiceStatus | str) -> bool:
    return allowed(status, _S.ISSUED)


def chargeable(status: InvoiceStatus | str) -> bool:
    """A payment attempt may settle it."""
    return allowed(status, _S.PAID)


def voidable(status: InvoiceStatus | str) -> bool:
    return allowed(status, _S.VOID)


def binding(status: InvoiceStatus | str) -> bool:
    """Numbered and in force: it bills what its lines say (issued, paid or failed)."""
    status = InvoiceStatus(status)
    return status is not _S.DRAFT and status is not _S.VOID


def settled(status: InvoiceStatus | str) -> bool:
    """Nothing is due on it any more (paid, or void): a final state."""
    return not TRANSITIONS[InvoiceStatus(status)]


def live(status: InvoiceStatus | str) -> bool:
    """It holds its period: a period has at most one live invoice; a void one can be
    replaced."""
    return InvoiceStatus(status) is not _S.VOID


BINDING: tuple[str, ...] = tuple(s.value for s in InvoiceStatus if binding(s))
CHARGEABLE: tuple[str, ...] = tuple(s.value for s in InvoiceStatus if chargeable(s))
