"""Handling a delivered CloudEvent exactly once per function, whatever the redeliveries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.adapters.postgres import inbox
from core.adapters.postgres.database import get_database


@dataclass(frozen=True)
class ReceivedEvent:
    """The parts of a CloudEvent a handler may use (independent of the SDK's classes)."""

    id: str
    source: str
    type: str
    data: Any
    subject: str | None = None
    time: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)


# Services a handler calls join the inbox transaction (Database.transaction() is ambient),
# so the inbox row and the handler's effects commit together.
EventHandler = Callable[[ReceivedEvent], None]


def handle_once(
    function: str, event: ReceivedEvent, handler: EventHandler, *, dedupe: bool = True
) -> bool:
    """Run `handler` in one transaction with the inbox record; False for a redelivery
    (the handler does not run again, and the delivery is acknowledged). `dedupe=False`
    is for handlers idempotent by construction that must answer every delivery (they
    re-announce their stored result): no inbox record, the handler always runs, and the
    services it calls own their transactions (a billing step commits before the next one
    starts: a draft is committed before it is issued)."""
    if not dedupe:
        handler(event)
        return True
    with get_database().transaction() as connection:
        if not inbox.record_first(connection, function, event.source, event.id, event.type):
            return False
        handler(event)
    return True


def handled_events(function: str) -> list[tuple[str, str, str]]:
    with get_database().transaction() as connection:
        return inbox.handled(connection, function)
