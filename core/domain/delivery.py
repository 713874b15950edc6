"""How an HTTP status answering a CloudEvent delivery is read, as Knative reads it
(../shared/KNATIVE.md; knative/specs data-plane.md): 5xx and these 4xx are retried, every
other 4xx is final. The one copy of the rule: the bus that sends our CloudEvents, the
local broker that delivers them in development, and the handlers that choose their own
answer (422 for an event that must never be retried) all read it here."""

from __future__ import annotations

RETRYABLE_CLIENT_STATUSES = frozenset({404, 408, 409, 429})
NEVER_RETRIED_STATUS = 422


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_CLIENT_STATUSES
