"""CloudEvents a function has handled, for at-least-once delivery made effectively-once."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from core.adapters.postgres.tables import cloudevent_inbox


def record_first(
    connection: Connection, function: str, source: str, event_id: str, type_: str
) -> bool:
    """True if this is the first time `function` sees (source, id); False for a redelivery.
    A concurrent redelivery waits on the unique index until the first commits or rolls back."""
    statement = (
        insert(cloudevent_inbox)
        .values(function=function, source=source, id=event_id, type=type_)
        .on_conflict_do_nothing()
        .returning(cloudevent_inbox.c.id)
    )
    return connection.execute(statement).scalar_one_or_none() is not None


def handled(connection: Connection, function: str) -> list[tuple[str, str, str]]:
    rows = connection.execute(
        select(cloudevent_inbox.c.source, cloudevent_inbox.c.id, cloudevent_inbox.c.type)
        .where(cloudevent_inbox.c.function == function)
        .order_by(cloudevent_inbox.c.received_at)
    ).all()
    return [(row.source, row.id, row.type) for row in rows]
