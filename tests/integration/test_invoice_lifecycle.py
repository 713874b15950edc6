"""Every committed event is counted exactly once — by the invoice of its period if it was
committed before that invoice was issued, else by one adjustment a later invoice carries —
whatever the interleaving of ingestion, folding, drafting, refreshing, issuing, voiding and
the billing tick; drafts are live; nothing is stranded; a voided period can be invoiced
again. Against the real services and PostgreSQL (docs/concepts.md, "Every event counted
once")."""

import random
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import psycopg
import pytest
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.config import reload_settings
from core.services import aggregation, api_keys, ingest, usage
from core.services.caller import SYSTEM
from core.services.invoicing import cycles, lifecycle
from tests.asgi_client import create_app as create_asgi_app
from tests.conftest import PROJECT_ROOT
from tests.fixtures.samples import create_metric
from tests.integration.billing_setup import JULY, JUNE, NOW, Client, _event

MAIN = str(PROJECT_ROOT / "functions" / "main.py")
SEPTEMBER, OCTOBER, NOVEMBER = (datetime(2026, m, 1, tzinfo=UTC) for m in (9, 10, 11))


def _adjustments(client, customer="cust_acme"):
    return client.call("GET", f"/v1/adjustments?customer_id={customer}&limit=1000")["data"]


def _usage_quantity(invoice, metric="api_calls"):
    (line,) = [
        line
        for line in invoice["lines"]
        if line["type"] == "usage" and line["metric_key"] == metric
    ]
    return D(line["quantity"]), D(line["amount"])


@pytest.fixture
def unit_price_one(db):
    """The reproduction of the issue: a per_unit plan at unit price 1 from September."""
    create_metric("api_calls")
    client = Client()
    client.api.post(
        "/v1/price-plans",
        {
            "code": "unit",
            "name": "Unit",
            "currency": "USD",
            "interval": "month",
            "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
        },
    )
    client.api.post("/v1/customers", {"id": "cust_acme", "name": "Acme", "currency": "USD"})
    subscription = client.api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_acme", "plan_code": "unit", "starts_at": SEPTEMBER.isoformat()},
    )
    producer = create_asgi_app(target="ingest", source=MAIN).test_client()
    secret = api_keys.create_key(SYSTEM, name="producer", scopes=["events:write"]).secret
    producer.environ_base.update({"HTTP_AUTHORIZATION": f"Bearer {secret}"})
    return client, producer, subscription["id"]


def _post_event(producer, key, value, day):
    response = producer.post(
        "/v1/events",
        json={
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": value,
            "timestamp": (SEPTEMBER + timedelta(days=day - 1, hours=12)).isoformat(),
            "idempotency_key": key,
        },
    )
    assert response.status_code == 202, response.data
    return response.get_json()


def test_an_event_committed_while_the_invoice_is_a_draft_is_billed_by_its_issue(unit_price_one):
    """The issue's reproduction: an event of 5 posted between draft and issue was stored,
    counted by mode=exact, and billed by no invoice ever."""
    client, producer, subscription_id = unit_price_one
    _post_event(producer, "sep-5", 10, 5)
    draft = client.draft(subscription_id, SEPTEMBER, OCTOBER)
    assert (draft["status"], draft["total"]) == ("draft", "10")
    assert _post_event(producer, "sep-6", 5, 6)["status"] == "accepted"
    issued = client.call("POST", f"/v1/invoices/{draft['id']}/issue")
    assert (issued["status"], issued["total"], _usage_quantity(issued)) == (
        "issued",
        "15",
        (D(15), D(15)),
    )
    assert issued["calculation_id"] != draft["calculation_id"]  # the one it was issued from
    calculation = client.calculate.get(
        f"/v1/pricing/calculations/{issued['calculation_id']}", headers=client.headers
    ).get_json()
    assert calculation["total"] == "15"
    aggregation.drain()  # the fold of the late-looking event finds nothing missing
    assert _adjustments(client) == []
    october = client.draft(subscription_id, OCTOBER, NOVEMBER)
    assert [line for line in october["lines"] if line["type"] == "adjustment"] == []
    exact = usage.exact_summary(
        customer_id="cust_acme", metric_key="api_calls", start=SEPTEMBER, end=OCTOBER
    )
    assert exact["value"] == D(15)


def test_refresh_reprices_a_draft_and_an_unchanged_draft_is_not_scanned_again(
    unit_price_one, monkeypatch
):
    client, producer, subscription_id = unit_price_one
    _post_event(producer, "sep-5", 10, 5)
    draft = client.draft(subscription_id, SEPTEMBER, OCTOBER)
    from core.services import pricing

    scans = []
    compute = pricing.compute
    monkeypatch.setattr(pricing, "compute", lambda *a, **k: scans.append(1) or compute(*a, **k))
    same = client.call("POST", f"/v1/invoices/{draft['id']}/refresh")
    assert same == draft and scans == []  # nothing changed: no scan, no new content
    _post_event(producer, "sep-7", 7, 7)
    refreshed = client.call("POST", f"/v1/invoices/{draft['id']}/refresh")
    assert (refreshed["total"], len(scans)) == ("17", 1)
    assert refreshed["calculation_id"] != draft["calculation_id"]
    issued = client.call("POST", f"/v1/invoices/{draft['id']}/issue")
    assert (issued["total"], len(scans)) == ("17", 1)  # issued from the refreshed pricing
    refused = client.invoice.post(f"/v1/invoices/{draft['id']}/refresh", headers=client.headers)
    assert refused.status_code == 409 and refused.get_json()["code"] == "invoice_issued"


def test_the_billing_tick_refreshes_drafts(unit_price_one):
    client, producer, subscription_id = unit_price_one
    draft = client.draft(subscription_id, SEPTEMBER, OCTOBER)
    assert draft["total"] == "0"
    _post_event(producer, "sep-9", 9, 9)
    assert cycles.refresh_drafts() == 1
    assert client.call("GET", f"/v1/invoices/{draft['id']}")["total"] == "9"


def test_an_event_committed_after_the_issue_is_one_adjustment_on_the_next_invoice(unit_price_one):
    client, producer, subscription_id = unit_price_one
    _post_event(producer, "sep-5", 10, 5)
    september = client.draft(subscription_id, SEPTEMBER, OCTOBER)
    september = client.call("POST", f"/v1/invoices/{september['id']}/issue")
    _post_event(producer, "sep-6", 5, 6)
    aggregation.drain()
    aggregation.drain()
    (late,) = _adjustments(client)
    assert (late["kind"], late["quantity_delta"], late["amount_delta"], late["status"]) == (
        "late_usage",
        "5",
        "5",
        "pending",
    )
    october = client.draft(subscription_id, OCTOBER, NOVEMBER)
    october = client.call("POST", f"/v1/invoices/{october['id']}/issue")
    assert october["total"] == "5"
    (late,) = _adjustments(client)
    assert late["carried_by"] == {
        "invoice_id": october["id"],
        "number": october["number"],
        "status": "issued",
    }


def _period_billed(client, invoice_id, subscription_id, start, end):
    """What the period's binding invoice billed plus every standing late-usage adjustment
    and reversal recorded against any of the period's invoices."""
    with get_database().transaction() as connection:
        ids = connection.execute(
            text(
                "SELECT id FROM invoices WHERE subscription_id = :s AND period_start = :a "
                "AND period_end = :b"
            ),
            {"s": subscription_id, "a": start, "b": end},
        ).scalars()
        period_ids = set(ids)
    invoice = client.call("GET", f"/v1/invoices/{invoice_id}")
    quantity, amount = _usage_quantity(invoice)
    for adjustment in _adjustments(client):
        if (
            adjustment["original_invoice_id"] in period_ids
            and adjustment["kind"] in {"late_usage", "reversal"}
            and adjustment["status"] != "cancelled"
        ):
            quantity += D(adjustment["quantity_delta"])
            amount += D(adjustment["amount_delta"])
    return quantity, amount


@pytest.mark.parametrize("seed", range(8))
def test_concurrent_ingest_fold_draft_refresh_issue_and_tick_count_every_event_once(
    billing, seed, monkeypatch
):
    """Events for June posted continuously by three threads while June's invoice is
    drafted, refreshed and issued, the aggregator folds and the billing tick runs; then:
    quantity on the issued invoice + quantities of its adjustments = exact usage.

    The interleaving that loses usage unless issuing and the fold are ordered is forced:
    the issue is held open between its pricing and its commit (where it takes its number)
    while events keep committing and the aggregator keeps folding, and the producers stop
    before it commits — so no later event's fold can make up for a lost one (a late-usage
    difference re-prices the whole period)."""
    client, subscription_id = billing
    rng = random.Random(seed)
    stop, producers_stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    sent: list[int] = []
    next_number = lifecycle.rows.next_number
    hold = random.Random(seed + 3)

    def slow_number(connection, series):
        time.sleep(hold.uniform(0.02, 0.05))  # events commit and are folded meanwhile
        producers_stop.set()
        for thread in producers:
            thread.join(30)
        return next_number(connection, series)

    monkeypatch.setattr(lifecycle.rows, "next_number", slow_number)

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as error:  # collected and asserted
                failures.append(error)
                producers_stop.set()
                stop.set()

        return threading.Thread(target=run)

    def producer(number):
        local = random.Random(seed * 100 + number)
        batch = 0
        while not producers_stop.is_set():
            events = [
                _event(
                    f"s{seed}-p{number}-b{batch}-{i}", 20 + local.randrange(9), local.randint(1, 3)
                )
                for i in range(local.randint(1, 5))
            ]
            outcomes = ingest.ingest(events, now=NOW)
            assert all(o.outcome == "accepted" for o in outcomes)
            sent.extend(int(e["value"]) for e in events)
            batch += 1
            time.sleep(local.uniform(0, 0.004))

    def folder():
        while not stop.is_set():
            aggregation.drain()
            time.sleep(rng.uniform(0, 0.003))

    def ticker():
        while not stop.is_set():
            cycles.refresh_drafts()
            cycles.invoice_stranded_adjustments()
            time.sleep(0.002)

    issued: dict = {}

    def invoicer():
        plan = random.Random(seed + 7)
        time.sleep(plan.uniform(0.01, 0.08))
        draft, _ = lifecycle.create_draft(SYSTEM, subscription_id, JUNE, JULY)
        for _ in range(plan.randint(0, 3)):
            time.sleep(plan.uniform(0, 0.03))
            lifecycle.refresh(SYSTEM, draft["id"])
        time.sleep(plan.uniform(0, 0.05))
        issued.update(lifecycle.issue(SYSTEM, draft["id"]))
        time.sleep(0.05)  # the folds that waited for the issue run
        stop.set()

    producers = [guarded(lambda n=n: producer(n)) for n in range(3)]
    others = [guarded(folder), guarded(ticker), guarded(invoicer)]
    for thread in producers + others:
        thread.start()
    for thread in producers + others:
        thread.join(60)
    assert failures == []
    while aggregation.drain().claimed:
        pass
    exact = usage.exact_summary(
        customer_id="cust_acme", metric_key="api_calls", start=JUNE, end=JULY
    )
    assert exact["value"] == D(300 + sum(sent))  # the fixture's 300 June events, and ours
    quantity, amount = _period_billed(client, issued["id"], subscription_id, JUNE, JULY)
    assert quantity == exact["value"]
    assert amount == exact["value"] * D("0.01")  # per_unit 0.01: nothing billed twice


def test_late_usage_of_an_ended_subscription_is_billed_by_an_adjustments_invoice(db, monkeypatch):
    """Its final invoice is issued and no other subscription invoice will come: the tick
    bills the adjustment on a standalone invoice (and the adjustment names it)."""
    monkeypatch.setenv("ABAXUS_INVOICE_GRACE", "0")
    reload_settings()
    create_metric("api_calls")
    client = Client()
    client.api.post(
        "/v1/price-plans",
        {
            "code": "daily",
            "name": "Daily",
            "currency": "USD",
            "interval": "day",
            "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "2"}],
        },
    )
    client.api.post("/v1/customers", {"id": "cust_acme", "name": "Acme", "currency": "USD"})
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    subscription = client.api.post(
        "/v1/subscriptions",
        {
            "customer_id": "cust_acme",
            "plan_code": "daily",
            "starts_at": (today - timedelta(days=2)).isoformat(),
        },
    )
    ends_at = datetime.now(UTC) + timedelta(seconds=1)
    client.api.post(
        f"/v1/subscriptions/{subscription['id']}/cancel", {"at": ends_at.isoformat()}, expect=200
    )

    def event(key, seconds_ago):
        return {
            "customer_id": "cust_acme",
            "metric_key": "api_calls",
            "value": 1,
            "timestamp": (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(),
            "idempotency_key": key,
        }

    ingest.ingest([event("final-1", 30), event("final-2", 20)])
    time.sleep(max(0.0, (ends_at - datetime.now(UTC)).total_seconds()) + 0.05)
    with get_database().transaction() as connection:
        ends_at = connection.execute(
            text("SELECT ends_at FROM subscriptions WHERE id = :s"), {"s": subscription["id"]}
        ).scalar_one()
    final = client.draft(subscription["id"], today, ends_at)
    final = client.call("POST", f"/v1/invoices/{final['id']}/issue")
    assert final["total"] == "4"
    ingest.ingest([event("late-1", 40)])  # committed after the final invoice was issued
    aggregation.drain()
    (late,) = _adjustments(client)
    assert (late["kind"], late["amount_delta"], late["status"]) == ("late_usage", "2", "pending")
    (standalone,) = cycles.invoice_stranded_adjustments()
    standalone = client.call("GET", f"/v1/invoices/{standalone['id']}")
    assert (standalone["kind"], standalone["status"], standalone["total"]) == (
        "adjustments",
        "issued",
        "2",
    )
    assert standalone["subscription_id"] is None and standalone["number"] != final["number"]
    assert [line["adjustment_id"] for line in standalone["lines"]] == [late["id"]]
    (late,) = _adjustments(client)
    assert late["carried_by"]["invoice_id"] == standalone["id"]
    assert cycles.invoice_stranded_adjustments() == []  # billed once


def test_void_and_reinvoice_counts_usage_once_across_the_pair_with_gap_free_numbers(billing):
    client, subscription_id = billing
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    ingest.ingest([_event(f"late{n}", 25) for n in range(40)], now=NOW)  # +40 after issue
    aggregation.drain()
    july = client.draft(subscription_id, JULY, JULY + timedelta(days=31))
    july = client.call("POST", f"/v1/invoices/{july['id']}/issue")
    assert july["total"] == "10.4"  # fee 10 + June's late 40 x 0.01
    # June was wrong: void it. Its late usage was billed by July: a reversal is pending.
    voided = client.call("POST", f"/v1/invoices/{june['id']}/void", {"reason": "wrong rate"})
    assert (voided["status"], voided["number"]) == ("void", june["number"])
    by_kind = {a["kind"]: a for a in _adjustments(client)}
    assert (by_kind["reversal"]["amount_delta"], by_kind["reversal"]["status"]) == (
        "-0.4",
        "pending",
    )
    assert by_kind["reversal"]["reverses"] == by_kind["late_usage"]["id"]
    assert by_kind["void_credit"]["carried_by"]["invoice_id"] == june["id"]
    # Re-invoice June: the replacement bills all 340 events, and carries the reversal of
    # the 0.4 that July already billed for 40 of them.
    replacement = client.draft(subscription_id)
    assert replacement["replaces"] == june["id"] and replacement["id"] != june["id"]
    replacement = client.call("POST", f"/v1/invoices/{replacement['id']}/issue")
    assert _usage_quantity(replacement) == (D(340), D("3.4"))
    carried = [(line["kind"], line["amount"]) for line in replacement["lines"][2:]]
    assert (carried, replacement["total"]) == ([("reversal", "-0.4")], "13")
    # Asking again returns the replacement; the voided invoice is unchanged and readable.
    assert client.draft(subscription_id, expect=200)["id"] == replacement["id"]
    assert client.call("GET", f"/v1/invoices/{june['id']}") == voided
    # Across the pair and the adjustments June's usage is counted once: 340 x 0.01.
    quantity, amount = _period_billed(client, replacement["id"], subscription_id, JUNE, JULY)
    assert (quantity, amount) == (D(340), D("3.4"))
    august = client.draft(subscription_id, JULY + timedelta(days=31), JULY + timedelta(days=62))
    august = client.call("POST", f"/v1/invoices/{august['id']}/issue")
    assert august["total"] == "10"  # nothing left to carry
    numbers = [i["number"] for i in (june, july, replacement, august)]
    assert numbers == [f"ABX-2026-{n:06d}" for n in (1, 2, 3, 4)]


def test_voiding_cancels_pending_late_usage_and_releases_what_it_carried(billing):
    client, subscription_id = billing
    client.call(
        "POST",
        "/v1/adjustments",
        {"customer_id": "cust_acme", "amount": "5", "reason": "setup"},
        201,
    )
    june = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    assert june["total"] == "18"  # 13 + the manual 5, carried
    ingest.ingest([_event(f"late{n}", 25) for n in range(10)], now=NOW)
    aggregation.drain()
    client.call("POST", f"/v1/invoices/{june['id']}/void", {"reason": "duplicate"})
    by_kind = {a["kind"]: a for a in _adjustments(client)}
    assert by_kind["manual"]["status"] == "pending"  # carried again by the next invoice
    assert by_kind["late_usage"]["status"] == "cancelled"  # the replacement will bill it
    assert "reversal" not in by_kind
    replacement = client.call("POST", f"/v1/invoices/{client.draft(subscription_id)['id']}/issue")
    assert replacement["total"] == "18.1"  # 310 x 0.01 + 10 + the manual 5
    assert [a["status"] for a in _adjustments(client) if a["kind"] == "manual"] == ["applied"]


def test_the_cycle_does_not_reinvoice_a_voided_period_and_a_voided_draft_can_be_replaced(billing):
    client, subscription_id = billing
    draft = client.draft(subscription_id)
    client.call("POST", f"/v1/invoices/{draft['id']}/void", {"reason": "not yet"})
    invoice = cycles.on_calculation_completed(
        {
            "subscription_id": subscription_id,
            "period": {"start": JUNE.isoformat(), "end": JULY.isoformat()},
        }
    )
    assert invoice["id"] == draft["id"] and invoice["status"] == "void"
    assert all(p.end != JULY for p in cycles.due_periods(datetime(2026, 8, 20, tzinfo=UTC)))
    again = client.draft(subscription_id)
    assert (again["status"], again["replaces"]) == ("draft", draft["id"])


def test_the_database_refuses_every_status_change_outside_the_domain_table(billing, database_url):
    """abaxus_invoice_guard holds the same table as core/domain/invoices/status.py: every
    ordered pair of distinct statuses is tried against the database."""
    from core.domain.invoices.status import InvoiceStatus, allowed

    client, subscription_id = billing
    draft = client.draft(subscription_id)
    numbered = "CASE WHEN %(status)s = 'draft' THEN NULL ELSE 'N-1' END"
    with psycopg.connect(database_url, autocommit=True) as connection:
        for current in InvoiceStatus:
            for target in InvoiceStatus:
                if current == target:
                    continue
                with connection.transaction(force_rollback=True):
                    connection.execute("SET LOCAL session_replication_role = replica")
                    connection.execute(
                        f"UPDATE invoices SET status = %(status)s, number = {numbered} "
                        "WHERE id = %(id)s",
                        {"status": current.value, "id": draft["id"]},
                    )
                    connection.execute("SET LOCAL session_replication_role = origin")
                    try:
                        with connection.transaction():
                            connection.execute(
                                f"UPDATE invoices SET status = %(status)s, number = {numbered} "
                                "WHERE id = %(id)s",
                                {"status": target.value, "id": draft["id"]},
                            )
                        refused = False
                    except psycopg.Error as error:
                        refused = error.sqlstate == "AB001" or error
                assert refused is (not allowed(current, target)), (current, target, refused)


def test_the_pipeline_draft_takes_the_calculation_just_made_unless_usage_changed_since(
    unit_price_one, monkeypatch
):
    """invoice.requested -> calculate -> calculation.completed -> draft: the draft uses the
    calculation `calculate` stored (its fingerprint still current: no second scan); an
    event committed in between makes the draft price the period again."""
    from core.services import pricing

    client, producer, subscription_id = unit_price_one
    _post_event(producer, "sep-5", 10, 5)
    period = {"start": SEPTEMBER.isoformat(), "end": OCTOBER.isoformat()}
    calculation = pricing.calculate(subscription_id, period_start=SEPTEMBER, period_end=OCTOBER)
    scans = []
    compute = pricing.compute
    monkeypatch.setattr(pricing, "compute", lambda *a, **k: scans.append(1) or compute(*a, **k))
    monkeypatch.setenv("ABAXUS_AUTO_ISSUE", "false")
    reload_settings()
    try:
        data = {"subscription_id": subscription_id, "period": period}
        draft = cycles.on_calculation_completed({**data, "calculation_id": calculation["id"]})
        assert (draft["calculation_id"], draft["total"], scans) == (calculation["id"], D(10), [])
        client.call("POST", f"/v1/invoices/{draft['id']}/void", {"reason": "again"})
        again = pricing.calculate(subscription_id, period_start=SEPTEMBER, period_end=OCTOBER)
        scans.clear()
        _post_event(producer, "sep-6", 5, 6)  # after the calculation, before the draft
        replacement, _ = lifecycle.create_draft(
            SYSTEM, subscription_id, SEPTEMBER, OCTOBER, calculation_id=again["id"]
        )
        assert (replacement["total"], len(scans)) == (D(15), 1)
    finally:
        monkeypatch.delenv("ABAXUS_AUTO_ISSUE")
        reload_settings()


def test_with_auto_issue_the_pipeline_issues_in_one_transaction_from_the_calculation(
    unit_price_one, monkeypatch
):
    from core.services import pricing

    client, producer, subscription_id = unit_price_one
    _post_event(producer, "sep-5", 10, 5)
    calculation = pricing.calculate(subscription_id, period_start=SEPTEMBER, period_end=OCTOBER)
    scans = []
    compute = pricing.compute
    monkeypatch.setattr(pricing, "compute", lambda *a, **k: scans.append(1) or compute(*a, **k))
    period = {"start": SEPTEMBER.isoformat(), "end": OCTOBER.isoformat()}
    issued = cycles.on_calculation_completed(
        {"subscription_id": subscription_id, "period": period, "calculation_id": calculation["id"]}
    )
    assert (issued["status"], issued["total"], issued["number"], scans) == (
        "issued",
        D(10),
        "ABX-2026-000001",
        [],
    )
    again = cycles.on_calculation_completed(
        {"subscription_id": subscription_id, "period": period, "calculation_id": calculation["id"]}
    )
    assert again == issued  # a redelivery changes nothing
    actions = [a["action"] for a in client.api.get("/v1/audit?entity=invoice")["data"]]
    assert actions == ["invoice.drafted", "invoice.issued"]
