"""Corrections (API.md §19) through the real api, ingest, invoice and calculate apps on the
real PostgreSQL: a replace with preview, apply and revert on an issued period (adjustments
with the checksums of the events added and superseded; the issued invoice and the events
behind its lines unchanged), an amend and the one-event retract, a draft re-priced,
events posted into a correction validated and counted only once applied, owners."""

import random
import threading
import time
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from functions_framework import create_app

from core.domain.corrections import NewCorrection, events_checksum
from core.services import aggregation, usage
from tests.asgi_client import create_app as create_asgi_app
from tests.integration.billing_setup import JULY, JUNE, MAIN

HOUR = JUNE + timedelta(days=5, hours=3)  # 10 events of value 1 at 03:00 on June 6


@pytest.fixture
def apps(billing):
    client, subscription_id = billing
    api = create_app(target="api", source=MAIN).test_client()
    ingest = create_asgi_app(target="ingest", source=MAIN).test_client()
    return client, subscription_id, api, ingest


def _call(app, method, path, headers, body=None, *, expect=200):
    send = app.get if method == "GET" else app.post
    response = (
        send(path, json=body, headers=headers) if body is not None else send(path, headers=headers)
    )
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def _june_usage(mode="exact"):
    found = usage.summary(
        mode=mode, customer_id="cust_acme", metric_key="api_calls", start=JUNE, end=JULY
    )
    return found["value"], found["event_count"]


def _all_events(client, url):
    found, cursor = [], None
    while True:
        page = client.calculate.get(
            url + "?limit=200" + (f"&cursor={cursor}" if cursor else ""), headers=client.headers
        ).get_json()
        found.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def _shas(db, sql, params=()):
    with psycopg.connect(db) as connection:
        return [sha for (sha,) in connection.execute(sql, params)]


def test_a_replace_previews_applies_and_reverts_without_touching_the_issued_invoice(apps, db):
    client, subscription_id, api, ingest = apps
    headers = client.headers
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    assert june["total"] == "13"  # 300 calls * 0.01 + 10
    lines = client.call("GET", f"/v1/invoices/{june['id']}/explain")["lines"]
    billed_events = _all_events(client, lines[0]["events_url"])
    assert len(billed_events) == 300
    opened = _call(
        api,
        "POST",
        "/v1/corrections",
        headers,
        {
            "metric_key": "api_calls",
            "customer_id": "cust_acme",
            "from": HOUR.isoformat(),
            "to": (HOUR + timedelta(hours=1)).isoformat(),
            "mode": "replace",
            "reason": "the gateway sent 1 per request instead of 0.4 for an hour",
        },
        expect=201,
    )
    assert (opened["status"], opened["events"], opened["mode"]) == ("open", 0, "replace")
    posted = _call(
        api,
        "POST",
        f"/v1/corrections/{opened['id']}/events",
        headers,
        {
            "events": [
                {
                    "customer_id": "cust_acme",
                    "metric_key": "api_calls",
                    "value": "4",
                    "timestamp": (HOUR + timedelta(minutes=30)).isoformat(),
                    "idempotency_key": "fix-1",
                },
                {
                    "customer_id": "cust_acme",
                    "metric_key": "api_calls",
                    "value": "1",
                    "timestamp": (HOUR + timedelta(hours=2)).isoformat(),
                    "idempotency_key": "fix-outside",
                },
                {
                    "customer_id": "cust_acme",
                    "metric_key": "api_calls",
                    "value": "1",
                    "timestamp": (HOUR + timedelta(minutes=5)).isoformat(),
                    "idempotency_key": "e5",  # a stored event's key: taken forever
                },
            ]
        },
        expect=207,
    )
    assert [(r["outcome"], r.get("code")) for r in posted["results"]] == [
        ("accepted", None),
        ("invalid", "outside_correction"),
        ("conflict", "idempotency_conflict"),
    ]
    assert _june_usage() == (Decimal(300), 300)  # nothing counts before the apply
    preview = _call(api, "GET", f"/v1/corrections/{opened['id']}/preview", headers)
    assert preview["events"] == 1
    assert [
        (
            p["period"]["start"],
            p["old_quantity"],
            p["new_quantity"],
            p["amount_difference"],
            p["carried_by"],
            p["invoice_id"],
        )
        for p in preview["periods"]
    ] == [("2026-06-01T00:00:00Z", "300", "294", "-0.06", "adjustment", june["id"])]
    assert _june_usage() == (Decimal(300), 300)  # the preview changed nothing
    applied = _call(api, "POST", f"/v1/corrections/{opened['id']}/apply", headers)
    assert applied["status"] == "applied"
    (adjustment,) = applied["adjustments"]
    superseded = _shas(
        db,
        "SELECT content_sha256 FROM events WHERE timestamp >= %s AND timestamp < %s "
        "AND correction_id IS NULL",
        (HOUR, HOUR + timedelta(hours=1)),
    )
    added = _shas(db, "SELECT content_sha256 FROM events WHERE idempotency_key = 'fix-1'")
    assert len(superseded) == 10
    assert (
        adjustment["kind"],
        adjustment["quantity_delta"],
        adjustment["amount_delta"],
        adjustment["original_invoice_id"],
        adjustment["correction_id"],
        adjustment["added_sha256"],
        adjustment["superseded_sha256"],
    ) == (
        "correction",
        "-6",
        "-0.06",
        june["id"],
        opened["id"],
        events_checksum(added),
        events_checksum(superseded),
    )
    # Usage reflects it at once, real time and exact alike.
    assert _june_usage("exact") == (Decimal(294), 291)
    assert _june_usage("realtime") == (Decimal(294), 291)
    # The events listing shows what counts; include=superseded shows what was replaced.
    window = (
        f"/v1/events?customer_id=cust_acme&from={HOUR.isoformat().replace('+00:00', 'Z')}"
        f"&to={(HOUR + timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
    )
    counting = _call(ingest, "GET", window, headers)["data"]
    assert [(e["idempotency_key"], e["superseded_by"]) for e in counting] == [("fix-1", None)]
    everything = _call(ingest, "GET", window + "&include=superseded", headers)["data"]
    assert sorted((e["superseded_by"] or "counts") for e in everything) == sorted(
        ["counts"] + [opened["id"]] * 10
    )
    # The issued invoice and the events behind its lines did not change.
    assert client.call("GET", f"/v1/invoices/{june['id']}") == june
    assert _all_events(client, lines[0]["events_url"]) == billed_events
    # The next invoice carries the difference.
    july = client.draft(subscription_id, JULY, JULY + timedelta(days=31))
    assert [
        (line["kind"], line["amount"]) for line in july["lines"] if line["type"] == "adjustment"
    ] == [("correction", "-0.06")]
    refused = _call(api, "POST", f"/v1/corrections/{opened['id']}/apply", headers, expect=409)
    assert refused["code"] == "correction_not_open"
    # Revert: the originals count again, with the adjustment the other way.
    reverted = _call(api, "POST", f"/v1/corrections/{opened['id']}/revert", headers)
    assert reverted["status"] == "reverted"
    assert [
        (a["amount_delta"], a["added_sha256"], a["superseded_sha256"])
        for a in reverted["adjustments"]
    ] == [("0.06", events_checksum(superseded), events_checksum(added))]
    assert _june_usage("exact") == (Decimal(300), 300)
    assert _june_usage("realtime") == (Decimal(300), 300)
    assert (
        _call(api, "POST", f"/v1/corrections/{opened['id']}/revert", headers, expect=409)["code"]
        == "correction_not_applied"
    )
    listed = _call(api, "GET", "/v1/corrections?metric_key=api_calls&status=reverted", headers)
    assert [c["id"] for c in listed["data"]] == [opened["id"]]
    trail = _call(api, "GET", f"/v1/audit?entity=correction&entity_id={opened['id']}", headers)
    actions = [e["action"] for e in trail["data"]]
    assert actions == [
        "correction.opened",
        "correction.events_posted",
        "correction.applied",
        "correction.reverted",
    ]
    money = next(e for e in trail["data"] if e["action"] == "correction.applied")["changes"]
    assert money["money"] == {"USD": "-0.06"} and money["adjustments"] == 1


def test_one_event_retracted_is_an_applied_amend_and_its_key_stays_consumed(apps, db):
    client, subscription_id, _, ingest = apps
    headers = client.headers
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    retracted = _call(
        ingest, "POST", "/v1/events/e7/retract", headers, {"reason": "a test request, not usage"}
    )
    assert (retracted["mode"], retracted["status"], retracted["retracted"]) == (
        "amend",
        "applied",
        1,
    )
    assert [(a["amount_delta"], a["original_invoice_id"]) for a in retracted["adjustments"]] == [
        ("-0.01", june["id"])
    ]
    assert _june_usage() == (Decimal(299), 299)
    assert _june_usage("realtime") == (Decimal(299), 299)
    resend = ingest.post(
        "/v1/events",
        json={
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": "1",
            "timestamp": (JUNE + timedelta(days=7, hours=3)).isoformat(),
            "idempotency_key": "e7",
        },
        headers=headers,
    )
    assert resend.get_json()["status"] == "duplicate"
    aggregation.drain()
    assert _june_usage("realtime") == (Decimal(299), 299)
    missing = ingest.post("/v1/events/nope/retract", json={"reason": "x"}, headers=headers)
    assert missing.status_code == 404


def test_an_amend_retracts_only_events_of_its_window_and_a_draft_is_repriced(apps, db):
    client, subscription_id, api, _ = apps
    headers = client.headers
    draft = client.draft(subscription_id)
    assert draft["total"] == "13"
    opened = _call(
        api,
        "POST",
        "/v1/corrections",
        headers,
        {
            "metric_key": "api_calls",
            "from": JUNE.isoformat(),
            "to": (JUNE + timedelta(days=2)).isoformat(),
            "mode": "amend",
            "reason": "duplicates from a retry storm",
        },
        expect=201,
    )
    refused = _call(
        api,
        "POST",
        f"/v1/corrections/{opened['id']}/retract",
        headers,
        {"idempotency_keys": ["e0", "e29", "missing"]},
        expect=422,
    )
    assert refused["code"] == "not_retractable" and len(refused["errors"]) == 2
    _call(
        api,
        "POST",
        f"/v1/corrections/{opened['id']}/retract",
        headers,
        {"idempotency_keys": ["e0", "e1", "e30"]},
    )
    preview = _call(api, "GET", f"/v1/corrections/{opened['id']}/preview", headers)
    assert [(p["carried_by"], p["quantity_difference"]) for p in preview["periods"]] == [
        ("draft", "-3")
    ]
    applied = _call(api, "POST", f"/v1/corrections/{opened['id']}/apply", headers)
    assert applied["adjustments"] == []  # a draft is re-priced, not adjusted
    assert client.call("GET", f"/v1/invoices/{draft['id']}")["total"] == "12.97"
    issued = client.call("POST", f"/v1/invoices/{draft['id']}/issue")
    assert issued["total"] == "12.97"
    replace_only = _call(
        api,
        "POST",
        "/v1/corrections",
        headers,
        {
            "metric_key": "api_calls",
            "from": JUNE.isoformat(),
            "to": JULY.isoformat(),
            "mode": "replace",
            "reason": "r",
        },
        expect=201,
    )
    wrong_mode = _call(
        api,
        "POST",
        f"/v1/corrections/{replace_only['id']}/retract",
        headers,
        {"idempotency_keys": ["e2"]},
        expect=409,
    )
    assert wrong_mode["code"] == "correction_not_amend"


def test_only_admins_or_the_owning_team_correct_a_metric(apps, db):
    client, _, api, _ = apps
    from core.services import api_keys
    from core.services.caller import SYSTEM
    from tests.conftest import bearer

    team_key = bearer(
        api_keys.create_key(
            SYSTEM, name="ops", scopes=["corrections:write"], team="team-billing"
        ).secret
    )
    body = {
        "metric_key": "api_calls",
        "from": JUNE.isoformat(),
        "to": JULY.isoformat(),
        "mode": "replace",
        "reason": "r",
    }
    refused = _call(api, "POST", "/v1/corrections", team_key, body, expect=403)
    assert refused["code"] == "not_owner"  # api_calls has no owner: admins only
    reader = bearer(api_keys.create_key(SYSTEM, name="r", scopes=["read"]).secret)
    assert _call(api, "POST", "/v1/corrections", reader, body, expect=403)["code"] == (
        "insufficient_scope"
    )
    bad = _call(
        api, "POST", "/v1/corrections", client.headers, {**body, "to": body["from"]}, expect=422
    )
    assert bad["code"] == "validation_error"


# -- races (API.md §19: nothing lost, nothing counted twice) --------------------------------


def _counted_june(db, replace, amend_keys):
    """What should count for June, straight from the events: every stored event of June
    but those the applied replace supersedes (in its window, received before its apply,
    not its own) and those the applied amend retracted."""
    with psycopg.connect(db) as connection:
        rows = connection.execute(
            "SELECT value, timestamp, received_at, correction_id, idempotency_key FROM events "
            "WHERE customer_id = 'cust_acme' AND timestamp >= %s AND timestamp < %s",
            (JUNE, JULY),
        ).fetchall()
        applied_at = connection.execute(
            "SELECT applied_at FROM corrections WHERE id = %s", (replace["id"],)
        ).fetchone()[0]
    total = Decimal(0)
    for value, at, received, correction, key in rows:
        start, end = replace["from"], replace["to"]
        if correction is None and start <= at < end and received < applied_at:
            continue
        if key in amend_keys:
            continue
        total += value
    return total


def _billed_june(client, invoice_id):
    invoice = client.call("GET", f"/v1/invoices/{invoice_id}")
    (line,) = [
        x for x in invoice["lines"] if x.get("metric_key") == "api_calls" and x["type"] == "usage"
    ]
    quantity, amount = Decimal(line["quantity"]), Decimal(line["amount"])
    adjustments = client.call("GET", "/v1/adjustments?customer_id=cust_acme&limit=1000")["data"]
    for adjustment in adjustments:
        if (
            adjustment["original_invoice_id"] == invoice_id
            and adjustment["status"] != "cancelled"
            and adjustment["kind"] in {"late_usage", "correction", "reversal"}
        ):
            quantity += Decimal(adjustment["quantity_delta"])
            amount += Decimal(adjustment["amount_delta"])
    return quantity, amount


@pytest.mark.parametrize("seed", range(4))
def test_corrections_racing_late_events_folds_an_issue_and_each_other_count_every_event_once(
    apps, db, seed
):
    """Late June events posted continuously into the window of a replace, the aggregator
    folding, June's invoice issued, a replace and an overlapping amend applied, all at
    once on real connections; then the issued invoice + its adjustments = the exact price
    of the events that count, and those are what the events themselves say should count."""
    from core.services import corrections as correcting
    from core.services import ingest as ingesting
    from core.services import pricing
    from core.services.caller import SYSTEM
    from core.services.invoicing import cycles, lifecycle

    client, subscription_id, _, _ = apps
    rng = random.Random(seed)
    # Even seeds issue a draft made before the race; odd ones run the billing pipeline's
    # path during it (a bulk run's: calculate, then draft and issue in one transaction).
    draft = client.draft(subscription_id) if seed % 2 == 0 else None
    issued: dict = {}
    window_start = JUNE + timedelta(days=20)
    replace = correcting.create(
        SYSTEM,
        NewCorrection.model_validate(
            {
                "metric_key": "api_calls",
                "customer_id": "cust_acme",
                "from": window_start.isoformat(),
                "to": (window_start + timedelta(days=3)).isoformat(),
                "mode": "replace",
                "reason": "double-sent",
            }
        ),
    )
    correcting.add_events(
        SYSTEM,
        replace["id"],
        [
            {
                "customer_id": "cust_acme",
                "metric_key": "api_calls",
                "value": "7",
                "timestamp": (window_start + timedelta(hours=5)).isoformat(),
                "idempotency_key": f"fix-{seed}",
            }
        ],
    )
    amend = correcting.create(
        SYSTEM,
        NewCorrection.model_validate(
            {
                "metric_key": "api_calls",
                "from": (window_start + timedelta(days=1)).isoformat(),
                "to": JULY.isoformat(),
                "mode": "amend",
                "reason": "test traffic",
            }
        ),
    )
    amend_keys = {"e21", "e25", "e27"}  # June 22, 26 and 28: one inside the replace
    correcting.retract(SYSTEM, amend["id"], sorted(amend_keys))
    stop = threading.Event()
    failures: list[BaseException] = []

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as error:  # collected and asserted
                failures.append(error)
                stop.set()

        return threading.Thread(target=run)

    def producer():
        local = random.Random(seed * 7)
        batch = 0
        while not stop.is_set():
            ingesting.ingest(
                [
                    _late(f"r{seed}-{batch}-{i}", 20 + local.randrange(9), local.randint(1, 3))
                    for i in range(local.randint(1, 4))
                ]
            )
            batch += 1
            time.sleep(local.uniform(0, 0.003))

    def folder():
        while not stop.is_set():
            aggregation.drain()
            time.sleep(rng.uniform(0, 0.003))

    def corrector():
        time.sleep(rng.uniform(0.01, 0.05))
        correcting.apply(SYSTEM, replace["id"])

    def amender():
        time.sleep(rng.uniform(0.01, 0.05))
        correcting.apply(SYSTEM, amend["id"])

    def invoicer():
        time.sleep(rng.uniform(0.01, 0.05))
        if draft is not None:
            issued.update(lifecycle.issue(SYSTEM, draft["id"]))
        else:
            calculation = pricing.calculate(subscription_id, period_start=JUNE, period_end=JULY)
            issued.update(
                cycles.on_calculation_completed(
                    {
                        "subscription_id": subscription_id,
                        "period": {"start": JUNE.isoformat(), "end": JULY.isoformat()},
                        "calculation_id": calculation["id"],
                        "issue": True,
                        "charge": False,
                    }
                )
            )
        time.sleep(0.1)
        stop.set()

    threads = [guarded(w) for w in (producer, folder, corrector, amender, invoicer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    while aggregation.drain().claimed:
        pass
    exact = usage.exact_summary(
        customer_id="cust_acme", metric_key="api_calls", start=JUNE, end=JULY
    )
    assert exact["value"] == _counted_june(db, correcting.get(replace["id"]), amend_keys)
    assert (
        usage.summary(
            mode="realtime", customer_id="cust_acme", metric_key="api_calls", start=JUNE, end=JULY
        )["value"]
        == exact["value"]
    )
    assert issued["status"] == "issued"
    quantity, amount = _billed_june(client, issued["id"])
    assert (quantity, amount) == (exact["value"], exact["value"] * Decimal("0.01"))


def _late(key, day, value):
    return {
        "customer_id": "cust_acme",
        "metric_key": "api_calls",
        "value": value,
        "timestamp": (JUNE + timedelta(days=day, hours=5, minutes=day)).isoformat(),
        "idempotency_key": key,
    }


# -- review findings: each reproduced, then fixed ------------------------------------------------


def test_an_invoice_of_any_period_the_window_touches_gets_the_adjustment(apps, db):
    client, subscription_id, api, _ = apps
    headers = client.headers
    half = client.draft(subscription_id, JUNE, JUNE + timedelta(days=15))
    half = client.call("POST", f"/v1/invoices/{half['id']}/issue")
    opened = _call(
        api,
        "POST",
        "/v1/corrections",
        headers,
        {
            "metric_key": "api_calls",
            "customer_id": "cust_acme",
            "from": HOUR.isoformat(),
            "to": (HOUR + timedelta(hours=1)).isoformat(),
            "mode": "replace",
            "reason": "r",
        },
        expect=201,
    )
    preview = _call(api, "GET", f"/v1/corrections/{opened['id']}/preview", headers)
    assert [(p["period"]["end"], p["carried_by"], p["invoice_id"]) for p in preview["periods"]] == [
        ("2026-06-16T00:00:00Z", "adjustment", half["id"])
    ]
    applied = _call(api, "POST", f"/v1/corrections/{opened['id']}/apply", headers)
    assert [(a["amount_delta"], a["original_invoice_id"]) for a in applied["adjustments"]] == [
        ("-0.1", half["id"])
    ]


def test_overlapping_corrections_state_only_what_each_changed_in_their_checksums(apps, db):
    client, subscription_id, api, _ = apps
    headers = client.headers
    client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    window = {
        "metric_key": "api_calls",
        "customer_id": "cust_acme",
        "from": HOUR.isoformat(),
        "to": (HOUR + timedelta(hours=1)).isoformat(),
        "mode": "replace",
        "reason": "r",
    }
    fix = {
        "customer_id": "cust_acme",
        "metric_key": "api_calls",
        "timestamp": (HOUR + timedelta(minutes=30)).isoformat(),
    }
    first = _call(api, "POST", "/v1/corrections", headers, window, expect=201)
    _call(
        api,
        "POST",
        f"/v1/corrections/{first['id']}/events",
        headers,
        {"events": [{**fix, "value": "4", "idempotency_key": "fix-a"}]},
        expect=207,
    )
    _call(api, "POST", f"/v1/corrections/{first['id']}/apply", headers)
    second = _call(api, "POST", "/v1/corrections", headers, window, expect=201)
    _call(
        api,
        "POST",
        f"/v1/corrections/{second['id']}/events",
        headers,
        {"events": [{**fix, "value": "2", "idempotency_key": "fix-b"}]},
        expect=207,
    )
    (adjustment,) = _call(api, "POST", f"/v1/corrections/{second['id']}/apply", headers)[
        "adjustments"
    ]

    def only(key):
        return _shas(db, "SELECT content_sha256 FROM events WHERE idempotency_key = %s", (key,))

    assert (
        adjustment["amount_delta"],
        adjustment["superseded_sha256"],
        adjustment["added_sha256"],
    ) == (
        "-0.02",
        events_checksum(only("fix-a")),  # the originals were superseded already
        events_checksum(only("fix-b")),
    )
    assert _june_usage() == (Decimal(292), 291)


def test_events_posted_into_a_correction_meet_the_metrics_contract(apps, db):
    client, _, api, _ = apps
    headers = client.headers
    _call(
        api,
        "POST",
        "/v1/metrics",
        headers,
        {
            "key": "gpu",
            "name": "GPU",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
            "contract": {
                "value": {"type": "integer", "maximum": 100},
                "properties": {"type": "object", "properties": {"ratio": {"maximum": 1.5}}},
            },
        },
        expect=201,
    )
    opened = _call(
        api,
        "POST",
        "/v1/corrections",
        headers,
        {
            "metric_key": "gpu",
            "customer_id": "cust_acme",
            "from": JUNE.isoformat(),
            "to": JULY.isoformat(),
            "mode": "replace",
            "reason": "r",
        },
        expect=201,
    )
    event = {"customer_id": "cust_acme", "metric_key": "gpu", "timestamp": HOUR.isoformat()}
    posted = _call(
        api,
        "POST",
        f"/v1/corrections/{opened['id']}/events",
        headers,
        {
            "events": [
                {**event, "value": 500, "idempotency_key": "too-much"},
                {**event, "value": 5, "idempotency_key": "bad-ratio", "properties": {"ratio": 2.5}},
                {**event, "value": 5, "idempotency_key": "fine", "properties": {"ratio": 1.25}},
            ]
        },
        expect=207,
    )
    assert [(r["outcome"], r.get("code")) for r in posted["results"]] == [
        ("invalid", "contract_violation"),
        ("invalid", "contract_violation"),
        ("accepted", None),
    ]
    assert [e["type"] for r in posted["results"][:2] for e in r["errors"]] == ["maximum", "maximum"]


def test_a_held_event_a_replace_superseded_stays_held_when_released(apps, db):
    client, _, api, ingest = apps
    headers = client.headers
    contract = {
        "properties": {"type": "object", "required": ["region"]},
        "on_violation": "quarantine",
    }
    _call(
        api,
        "POST",
        "/v1/metrics",
        headers,
        {
            "key": "gpu",
            "name": "GPU",
            "aggregation": "sum",
            "effective_from": "2026-01-01T00:00:00Z",
            "contract": contract,
        },
        expect=201,
    )
    held = ingest.post(
        "/v1/events",
        json={
            "customer_id": "cust_acme",
            "metric_key": "gpu",
            "value": 5,
            "timestamp": HOUR.isoformat(),
            "idempotency_key": "held-1",
        },
        headers=headers,
    ).get_json()
    assert held["status"] == "quarantined"
    replace = _call(
        api,
        "POST",
        "/v1/corrections",
        headers,
        {
            "metric_key": "gpu",
            "customer_id": "cust_acme",
            "from": HOUR.isoformat(),
            "to": (HOUR + timedelta(hours=1)).isoformat(),
            "mode": "replace",
            "reason": "the whole hour is replaced",
        },
        expect=201,
    )
    _call(api, "POST", f"/v1/corrections/{replace['id']}/apply", headers)
    _call(
        api,
        "POST",
        "/v1/metrics/gpu/versions",
        headers,
        {
            "name": "GPU",
            "aggregation": "sum",
            "effective_from": "2026-02-01T00:00:00Z",
            "contract": {**contract, "properties": {"type": "object"}},
        },
        expect=201,
    )
    released = _call(ingest, "POST", "/v1/quarantine/release", headers, {"metric_key": "gpu"})
    assert (released["released"], released["remaining"]) == (0, 1)
    assert [(r["status"], r["superseded_by"]) for r in released["results"]] == [
        ("superseded", replace["id"])
    ]
    found = usage.exact_summary(customer_id="cust_acme", metric_key="gpu", start=JUNE, end=JULY)
    assert found["event_count"] == 0
