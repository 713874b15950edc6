"""Query and path parameters several routes share, with the constraints the domain puts on
them (the same patterns the request bodies are validated with)."""

from __future__ import annotations

from core.domain.events import CUSTOMER_ID, METRIC_KEY
from functions.declarations import QueryParameter, text

# Ids PostgreSQL keeps as `bigint` (dead letters): larger ones name nothing (404), and
# never reach a query as a number PostgreSQL cannot hold.
BIGINT_MAX = 2**63 - 1


def customer_id(description: str = "", *, required: bool = False) -> QueryParameter:
    return text(
        "customer_id",
        description,
        required=required,
        max_length=128,
        pattern=CUSTOMER_ID.pattern,
    )


def metric_key(description: str = "", *, required: bool = False) -> QueryParameter:
    return text(
        "metric_key", description, required=required, max_length=64, pattern=METRIC_KEY.pattern
    )
