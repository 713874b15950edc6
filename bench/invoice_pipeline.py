"""The billing pipeline in one process (`calculate`, then `calculation.completed`: draft and
issue) for N subscriptions of `invoice_run.py`'s data set (5 metrics, 2,000 events each):
ms per invoice, without HTTP or the broker. Run it from the tree to measure (a worktree of
other code, to compare); `profile` prints cProfile's top functions.

    cd <tree> && python bench/invoice_pipeline.py <tree> 80 [profile]
"""

import cProfile
import json
import os
import pstats
import sys
import time

root = sys.argv[1]
n = int(sys.argv[2])
profile = len(sys.argv) > 3
sys.path.insert(0, root)
os.environ["ABAXUS_LOG_LEVEL"] = "WARNING"

from bench.common import fresh_database

url = fresh_database("abaxus_bench_pipeline")  # DATABASE_URL: the server to use
os.environ["DATABASE_URL"] = url
import bench.invoice_run as run
from core.services import api_keys
from core.services.caller import SYSTEM
from tests.integration.catalog_client import Api

admin = api_keys.create_key(SYSTEM, name="a", scopes=["admin"]).secret
api = Api(admin)
for m in run.METRICS:
    api.post(
        "/v1/metrics",
        {"key": m, "name": m, "aggregation": "sum", "effective_from": "2026-01-01T00:00:00Z"},
    )
api.post(
    "/v1/price-plans",
    {"code": "bench", "name": "B", "currency": "USD", "interval": "month", "charges": run.CHARGES},
)
subs = []
for c in range(n):
    api.post("/v1/customers", {"id": f"cust_{c}", "name": "x", "currency": "USD"})
    subs.append(
        api.post(
            "/v1/subscriptions",
            {
                "customer_id": f"cust_{c}",
                "plan_code": "bench",
                "starts_at": run.OCTOBER.isoformat(),
            },
        )["id"]
    )
import psycopg

with psycopg.connect(url, autocommit=True) as c:
    c.execute("SELECT abaxus_ensure_event_partition('2026-10-01'::date)")
run.load(url, n, 2000)
from core.services import pricing

try:
    from core.services.invoicing import cycles as inv
except ImportError:
    from core.services import invoicing as inv


def go():
    t = time.perf_counter()
    for s in subs:
        calc = pricing.calculate(s, period_start=run.OCTOBER, period_end=run.NOVEMBER)
        inv.on_calculation_completed(
            {
                "subscription_id": s,
                "period": calc["period"],
                "calculation_id": calc["id"],
                "charge": False,
            }
        )
    return time.perf_counter() - t


if profile:
    p = cProfile.Profile()
    p.enable()
    w = go()
    p.disable()
    pstats.Stats(p).sort_stats("cumulative").print_stats(25)
else:
    w = go()
print(json.dumps({"root": root, "per_invoice_ms": round(w / n * 1000, 2)}))
