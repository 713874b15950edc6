"""A stateful model test of the billing engine against the real services and PostgreSQL.

Hypothesis drives random sequences of: ingesting events, resending them (duplicates),
resending their keys with other values (conflicts), late events into invoiced periods,
folding, drafting, refreshing, issuing, voiding, re-invoicing, charging and marking paid,
for two customers over three monthly periods. A pure model keeps what was sent and what
each customer owes for usage; after every step:
- the stored events are exactly the distinct keys accepted;
- exact usage per customer and period equals the model;
- with nothing left to fold, every event is counted exactly once across the period's
  binding invoice and its late-usage adjustments (and never more while folds are pending);
- invoice numbers are gap-free; every invoice's lines add up to its subtotal.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.domain.errors import Conflict
from core.services import aggregation, charging, ingest, jobs, usage
from core.services.caller import SYSTEM
from core.services.invoicing import lifecycle
from tests.conftest import truncate_all
from tests.fixtures.samples import create_metric
from tests.integration.catalog_client import Api

PERIODS = [datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4)]
CUSTOMERS = ("cust_a", "cust_b")
NOW = datetime(2026, 4, 20, tzinfo=UTC)


def _period(index):
    return PERIODS[index], PERIODS[index + 1]


class Billing(RuleBasedStateMachine):
    database_url: str = ""

    def __init__(self):
        super().__init__()
        self.sent: dict[str, tuple[str, int, int]] = {}  # key -> (customer, period, value)
        self.serial = 0

    @initialize()
    def catalog(self):
        truncate_all(self.database_url)
        create_metric("api_calls")
        from core.services import api_keys

        api = Api(api_keys.create_key(SYSTEM, name="admin", scopes=["admin"]).secret)
        api.post(
            "/v1/price-plans",
            {
                "code": "unit",
                "name": "Unit",
                "currency": "USD",
                "interval": "month",
                "charges": [{"metric_key": "api_calls", "model": "per_unit", "unit_price": "1"}],
            },
        )
        self.subscriptions = {}
        for customer in CUSTOMERS:
            api.post("/v1/customers", {"id": customer, "name": customer, "currency": "USD"})
            self.subscriptions[customer] = api.post(
                "/v1/subscriptions",
                {"customer_id": customer, "plan_code": "unit", "starts_at": PERIODS[0].isoformat()},
            )["id"]

    # -- events ---------------------------------------------------------------------------

    def _event(self, key, customer, period, value):
        start, _ = _period(period)
        return {
            "customer_id": customer,
            "metric_key": "api_calls",
            "value": value,
            "timestamp": (start + timedelta(days=3, hours=self.serial % 24)).isoformat(),
            "idempotency_key": key,
        }

    def _target(self, data):
        """A customer and period; mostly one that has an invoice (where the races are)."""
        invoiced = self._invoiced()
        if invoiced and data.draw(st.booleans()):
            return data.draw(st.sampled_from(invoiced), label="invoiced")
        return (
            data.draw(st.sampled_from(CUSTOMERS), label="customer"),
            data.draw(st.integers(0, 2), label="period"),
        )

    def _invoiced(self):
        """(customer, period) pairs that have an invoice, in a fixed order (a draw must not
        depend on random ids)."""
        with get_database().transaction() as connection:
            rows = connection.execute(
                text("SELECT DISTINCT subscription_id, period_start FROM invoices")
            ).all()
        by_subscription = {s: c for c, s in self.subscriptions.items()}
        return sorted((by_subscription[s], PERIODS.index(start)) for s, start in rows)

    @rule(
        data=st.data(),
        values=st.lists(st.integers(1, 9), min_size=1, max_size=4),
        fold_now=st.booleans(),
    )
    def ingest_events(self, data, values, fold_now):
        customer, period = self._target(data)
        batch = []
        for value in values:
            self.serial += 1
            key = f"k{self.serial}"
            batch.append(self._event(key, customer, period, value))
            self.sent[key] = (customer, period, value)
        outcomes = ingest.ingest(batch, now=NOW)
        assert [o.outcome for o in outcomes] == ["accepted"] * len(batch)
        if fold_now:  # the aggregator is often quick: fold before anything else happens
            aggregation.drain()

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def resend(self, data):
        key = data.draw(st.sampled_from(sorted(self.sent)))
        customer, period, value = self.sent[key]
        event = self._event(key, customer, period, value)
        event["timestamp"] = self._stored_timestamp(key)
        (outcome,) = ingest.ingest([event], now=NOW)
        assert outcome.outcome == "duplicate"
        (conflict,) = ingest.ingest([{**event, "value": value + 100}], now=NOW)
        assert conflict.outcome == "conflict"

    def _stored_timestamp(self, key):
        with get_database().transaction() as connection:
            stamp = connection.execute(
                text("SELECT timestamp FROM events WHERE idempotency_key = :k"), {"k": key}
            ).scalar_one()
        return stamp.isoformat()

    @rule()
    def fold(self):
        aggregation.drain()

    # -- invoices ---------------------------------------------------------------------------

    def _live(self, customer, period):
        start, end = _period(period)
        with get_database().transaction() as connection:
            row = connection.execute(
                text(
                    "SELECT id, status FROM invoices WHERE subscription_id = :s AND "
                    "period_start = :a AND period_end = :b AND status <> 'void'"
                ),
                {"s": self.subscriptions[customer], "a": start, "b": end},
            ).one_or_none()
        return row

    @rule(data=st.data())
    def draft_or_reinvoice(self, data):
        customer, period = self._target(data)
        start, end = _period(period)
        invoice, _ = lifecycle.create_draft(SYSTEM, self.subscriptions[customer], start, end)
        assert invoice["status"] != "void"

    @rule(data=st.data())
    def refresh(self, data):
        customer, period = self._target(data)
        live = self._live(customer, period)
        if live is not None and live.status == "draft":
            lifecycle.refresh(SYSTEM, live.id)

    @rule(data=st.data())
    def issue(self, data):
        customer, period = self._target(data)
        live = self._live(customer, period)
        if live is not None:
            assert lifecycle.issue(SYSTEM, live.id)["status"] in {
                "issued",
                "paid",
                "payment_failed",
            }

    @rule(data=st.data())
    def void(self, data):
        customer, period = self._target(data)
        live = self._live(customer, period)
        if live is None:
            return
        if live.status == "paid":
            with pytest.raises(Conflict, match="paid"):
                lifecycle.void(SYSTEM, live.id, "model test")
            return
        assert lifecycle.void(SYSTEM, live.id, "model test")["status"] == "void"

    @rule(data=st.data())
    def charge(self, data):
        customer, period = self._target(data)
        live = self._live(customer, period)
        if live is None:
            return
        try:
            charging.request_charge(SYSTEM, live.id)
        except Conflict:
            assert live.status in {"draft", "paid"}
            return
        jobs.drain(charging.CHARGE_QUEUE, {charging.ATTEMPT_JOB: charging.run_attempt})

    @rule(data=st.data())
    def mark_paid(self, data):
        customer, period = self._target(data)
        live = self._live(customer, period)
        if live is None:
            return
        try:
            assert charging.mark_paid(SYSTEM, live.id, "wire 42")["status"] == "paid"
        except Conflict:
            assert live.status == "draft"

    # -- invariants -------------------------------------------------------------------------

    def _model_usage(self, customer, period):
        return sum(v for c, p, v in self.sent.values() if (c, p) == (customer, period))

    @invariant()
    def stored_events_are_the_distinct_keys_accepted(self):
        if not hasattr(self, "subscriptions"):
            return
        with get_database().transaction() as connection:
            keys = set(connection.execute(text("SELECT idempotency_key FROM events")).scalars())
        assert keys == set(self.sent)

    @invariant()
    def exact_usage_equals_the_model(self):
        if not hasattr(self, "subscriptions"):
            return
        for customer in CUSTOMERS:
            for period in range(3):
                start, end = _period(period)
                exact = usage.exact_summary(
                    customer_id=customer, metric_key="api_calls", start=start, end=end
                )
                assert exact["value"] == D(self._model_usage(customer, period))

    @invariant()
    def every_event_is_counted_once_across_invoices_and_adjustments(self):
        if not hasattr(self, "subscriptions"):
            return
        with get_database().transaction() as connection:
            folds_pending = connection.execute(
                text("SELECT count(*) FROM jobs WHERE queue = 'aggregate' AND status = 'pending'")
            ).scalar_one()
            invoices = connection.execute(
                text(
                    "SELECT id, subscription_id, period_start, status, lines FROM invoices "
                    "WHERE status IN ('issued', 'paid', 'payment_failed')"
                )
            ).all()
            adjusted = {
                (subscription, start): quantity
                for subscription, start, quantity in connection.execute(
                    text(
                        "SELECT i.subscription_id, i.period_start, sum(a.quantity_delta) "
                        "FROM adjustments a JOIN invoices i ON i.id = a.original_invoice_id "
                        "WHERE a.kind IN ('late_usage', 'reversal') AND a.cancelled_at IS NULL "
                        "GROUP BY 1, 2"
                    )
                )
            }
        by_subscription = {s: c for c, s in self.subscriptions.items()}
        for invoice in invoices:
            customer = by_subscription[invoice.subscription_id]
            period = PERIODS.index(invoice.period_start)
            billed = sum(
                (D(line["quantity"]) for line in invoice.lines if line["type"] == "usage"), D(0)
            )
            billed += adjusted.get((invoice.subscription_id, invoice.period_start), D(0))
            expected = D(self._model_usage(customer, period))
            if folds_pending:
                assert billed <= expected
            else:
                assert billed == expected, (customer, period, billed, expected)

    @invariant()
    def numbers_are_gap_free_and_lines_add_up(self):
        if not hasattr(self, "subscriptions"):
            return
        with get_database().transaction() as connection:
            rows = connection.execute(
                text("SELECT series, sequence, lines, subtotal FROM invoices ORDER BY sequence")
            ).all()
        numbered = [row.sequence for row in rows if row.sequence is not None]
        assert numbered == list(range(1, len(numbered) + 1))
        for row in rows:
            assert sum((D(line["amount"]) for line in row.lines), D(0)) == row.subtotal


SEED = 3  # fixed: the suite explores the same sequences on every run


def test_the_billing_engine_against_its_model(database_url):
    Billing.database_url = database_url
    run_state_machine_as_test(
        seed(SEED)(Billing),
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
            # No shrinking: a failing sequence is reported as found (replaying a stateful
            # run against PostgreSQL hundreds of times would exceed the suite's budget).
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            print_blob=True,
        ),
    )
