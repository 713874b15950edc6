"""The unit of work of one HTTP request: everything it does commits together or not at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from core.adapters.postgres.database import get_database


@contextmanager
def request_transaction() -> Iterator[None]:
    with get_database().transaction():
        yield


def after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once the request's transaction has committed."""
    get_database().after_commit(callback)
