"""Which function owns which HTTP paths: the one table the dev server dispatches by, the
Knative HTTPRoute is checked against (tests/contract/test_manifests.py), and each
function's routes are checked against (tests/contract/test_routes.py)."""

from __future__ import annotations

# path prefix -> function target. A prefix owns itself and everything below it.
ROUTE_OWNERS: dict[str, str] = {
    "/v1/api-keys": "api",
    "/v1/metrics": "api",
    "/v1/price-plans": "api",
    "/v1/customers": "api",
    "/v1/subscriptions": "api",
    "/v1/audit": "api",
    "/v1/dead-letters": "api",
    "/v1/stats": "api",
    "/v1/corrections": "api",
    "/v1/coupons": "api",
    "/v1/regions": "api",
    "/dashboard": "api",
    "/v1/events": "ingest",
    "/v1/quarantine": "ingest",
    "/v1/usage": "aggregate",
    "/v1/pricing": "calculate",
    "/v1/invoices": "invoice",
    "/v1/adjustments": "invoice",
    "/v1/payments": "charge",
    "/v1/webhooks": "charge",
}

FUNCTIONS: tuple[str, ...] = ("api", "ingest", "aggregate", "calculate", "invoice", "charge")

# The Knative Service that runs each function (one image, a different target each).
SERVICE_PREFIX = "abaxus-"


def service_name(function: str) -> str:
    return SERVICE_PREFIX + function


def owner_of(path: str) -> str | None:
    """The function owning `path`, by the longest prefix on a segment boundary."""
    best: tuple[int, str] | None = None
    for prefix, function in ROUTE_OWNERS.items():
        if (path == prefix or path.startswith(prefix + "/")) and (
            best is None or len(prefix) > best[0]
        ):
            best = (len(prefix), function)
    return None if best is None else best[1]
