"""Schemathesis fuzzes the real dev server against docs/openapi.json: every operation with
generated valid and invalid requests (examples, coverage and fuzzing phases) and chains of
operations along the document's links (stateful phase), under every check it has —
no server error, status codes, content types and headers as documented, answers that
conform to their schemas, invalid data refused, valid data accepted, authentication
enforced, created resources readable.

A fixed seed and a bounded number of examples keep the suite's run reproducible and
within about a minute; `make fuzz` runs a longer profile (ABAXUS_FUZZ_EXAMPLES). A
failure prints schemathesis' report, with a `curl` to reproduce each case.

Tuned, not excluded (tests/contract/schemathesis.toml says why):
- `positive_data_acceptance` also accepts 422: a request the schema allows may still be
  refused by a rule no schema can state (a subscription for a customer that does not
  exist, a window whose `to` is before its `from`) — always as a problem document whose
  `code` names the rule.
- `use_after_free` is off: DELETE archives (API.md, "Soft delete"): an archived metric,
  plan, customer or API key stays readable by contract, which that check takes for a
  use after free.
The Stripe webhook is fuzzed too, but only its refusals can be reached: no generated
request carries a valid Stripe signature (the server has a webhook secret, so each is a
401 invalid_signature; tests/integration/test_charging.py covers signed events).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import DevServerProcess, start_dev_server

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(900)]

DOCUMENT = PROJECT_ROOT / "docs" / "openapi.json"
CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SCHEMATHESIS = Path(sys.executable).with_name("st")
KEY = "abx_schemathesis_fuzzing_admin_key_0001"
# The suite's profile: about a minute on two cores. `make fuzz` sets more.
EXAMPLES = int(os.environ.get("ABAXUS_FUZZ_EXAMPLES", "4"))
SEED = int(os.environ.get("ABAXUS_FUZZ_SEED", "20261205"))
RUN_SECONDS_MAX = 840


@pytest.fixture
def server(db: str, tmp_path: Path) -> Iterator[DevServerProcess]:
    process = start_dev_server(
        db,
        tmp_path,
        ABAXUS_DEV_TICKS="false",
        ABAXUS_BOOTSTRAP_KEY=KEY,
        STRIPE_WEBHOOK_SECRET="whsec_schemathesis_cannot_sign_with_this",
        ABAXUS_LOG_LEVEL="ERROR",
    )
    yield process
    process.stop()


def _call(base: str, method: str, path: str, body: Any = None, expect: int = 201) -> Any:
    response = requests.request(
        method,
        base + path,
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == expect, (path, response.status_code, response.text)
    return response.json() if response.content else None


def seed_catalog(base: str) -> None:
    """A metric, a plan, a customer with a subscription whose first period has ended,
    usage in it, a calculation, an issued and charged invoice, an adjustment and a dead
    letter: every read route has something to read, and ids to find."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now - timedelta(days=45)).isoformat().replace("+00:00", "Z")
    _call(
        base,
        "POST",
        "/v1/metrics",
        {
            "key": "api_calls",
            "name": "API calls",
            "unit": "call",
            "aggregation": "sum",
            "effective_from": "2020-01-01T00:00:00Z",
        },
    )
    _call(
        base,
        "POST",
        "/v1/price-plans",
        {
            "code": "pro",
            "name": "Pro",
            "currency": "USD",
            "interval": "month",
            "charges": [
                {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.001"},
                {"model": "flat_fee", "name": "Platform fee", "amount": "99.00"},
            ],
        },
    )
    _call(
        base,
        "POST",
        "/v1/customers",
        {"id": "cust_acme", "name": "Acme Inc", "email": "billing@acme.test", "currency": "USD"},
    )
    subscription = _call(
        base,
        "POST",
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "pro", "starts_at": start},
    )
    period = _call(base, "GET", f"/v1/subscriptions/{subscription['id']}", expect=200)
    first_end = period["current_period"]["start"]
    events = [
        {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": index + 1,
            "timestamp": (now - timedelta(days=40, minutes=index)).isoformat(),
            "idempotency_key": f"seed-{index}",
            "properties": {"region": "eu-west-1"},
        }
        for index in range(5)
    ]
    _call(base, "POST", "/v1/events/batch", {"events": events}, expect=207)
    body = {"subscription_id": subscription["id"], "period_start": start, "period_end": first_end}
    _call(base, "POST", "/v1/pricing/calculate", body, expect=200)
    invoice = _call(base, "POST", "/v1/invoices", body)
    _call(base, "POST", f"/v1/invoices/{invoice['id']}/issue", expect=200)
    _call(base, "POST", f"/v1/invoices/{invoice['id']}/charge", expect=202)
    _call(
        base,
        "POST",
        "/v1/adjustments",
        {"customer_id": "cust_acme", "amount": "-5", "reason": "goodwill"},
    )
    # A dead letter, as the broker's deadLetterSink receives one (for its list and re-send).
    letter = requests.post(
        base + "/_functions/api/dead-letters",
        json={
            "specversion": "1.0",
            "id": "undeliverable-1",
            "source": "/schemathesis",
            "type": "dev.abaxus.schemathesis.undeliverable.v1",
            "knativeerrorcode": "422",
            "data": {"seeded": True},
        },
        headers={"Content-Type": "application/cloudevents+json"},
        timeout=30,
    )
    assert letter.status_code == 202, letter.text


def test_the_server_keeps_every_promise_of_its_openapi_document(
    server: DevServerProcess, tmp_path: Path
) -> None:
    seed_catalog(server.base_url)
    started = time.monotonic()
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        str(DOCUMENT),
        "--url",
        server.base_url,
        "--header",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--exclude-checks",
        "use_after_free",  # DELETE archives by contract (schemathesis.toml says why)
        "--seed",
        str(SEED),
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",  # reproducible from the seed alone; nothing left in the work tree
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS_MAX,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(HOOKS),
            "SCHEMATHESIS_TELEMETRY": "false",
            "NO_COLOR": "1",
        },
        cwd=tmp_path,
        check=False,
    )
    elapsed = time.monotonic() - started
    print(result.stdout, result.stderr, sep="\n")  # the report, shown when the test fails
    assert result.returncode == 0, (
        f"schemathesis found failures in {elapsed:.0f}s (its report above)"
    )
