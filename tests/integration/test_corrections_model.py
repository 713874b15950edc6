"""A stateful model test of data contracts and corrections against the real services and
PostgreSQL (API.md §18 and §19).

Hypothesis drives random sequences of: events (some late into invoiced periods, some that
the meter's filter excludes, some that break the contract and are refused), folds, invoice
issue and void, `replace` corrections of a day (with replacement events), `amend`
corrections and one-event retractions, applied and reverted, for two customers over two
monthly periods. A pure model keeps every event, whether its region counts, and what each
correction supersedes; after every step:
- exact usage per customer and period equals the model (and real time, once folded);
- for every billed period: the binding invoice's usage plus its late-usage, correction and
  reversal adjustments equals the exact usage (price 1 per unit: quantity = amount);
- every issued line's events, as listed behind it, still reproduce its checksum.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from core.adapters.postgres.database import get_database
from core.domain.corrections import NewCorrection
from core.domain.meters import event_digest, usage_checksum
from core.domain.metrics import MetricDefinition
from core.services import aggregation, corrections, ingest, pricing, usage
from core.services.caller import SYSTEM
from core.services.catalog import metrics
from core.services.invoicing import lifecycle
from tests.conftest import truncate_all
from tests.integration.catalog_client import Api

PERIODS = [datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3)]
CUSTOMERS = ("cust_a", "cust_b")
NOW = datetime(2026, 3, 20, tzinfo=UTC)


@dataclass
class Event:
    key: str
    customer: str
    period: int
    day: int
    value: int
    counts_region: bool
    serial: int  # the model's clock: received after every event with a lower serial
    added_by: str | None = None  # the correction that posted it


@dataclass
class Fix:
    id: str
    mode: str
    customer: str
    period: int
    day: int | None  # replace: the day it covers
    status: str = "open"
    applied_serial: int = 0
    retracted: set[str] = field(default_factory=set)


def _instant(period, day, minute):
    return PERIODS[period] + timedelta(days=day, hours=9, minutes=minute)


class Corrections(RuleBasedStateMachine):
    database_url: str = ""

    def __init__(self):
        super().__init__()
        self.events: dict[str, Event] = {}
        self.fixes: dict[str, Fix] = {}
        self.serial = 0

    @initialize()
    def catalog(self):
        truncate_all(self.database_url)
        from core.services import api_keys

        metrics.create_metric(
            SYSTEM,
            MetricDefinition.model_validate(
                {
                    "key": "api_calls",
                    "name": "calls",
                    "aggregation": "sum",
                    "effective_from": "2025-01-01T00:00:00Z",
                    "filters": {"region": ["eu"]},
                    "contract": {"value": {"type": "integer", "maximum": "50"}},
                }
            ),
        )
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

    # -- the model -----------------------------------------------------------------------------

    def _superseded(self, event: Event) -> bool:
        if event.added_by is not None and self.fixes[event.added_by].status != "applied":
            return True
        for fix in self.fixes.values():
            if fix.status != "applied":
                continue
            if fix.mode == "amend" and event.key in fix.retracted:
                return True
            if (
                fix.mode == "replace"
                and event.added_by != fix.id
                and (event.customer, event.period, event.day) == (fix.customer, fix.period, fix.day)
                and event.serial < fix.applied_serial
            ):
                return True
        return False

    def _model_usage(self, customer, period):
        return sum(
            e.value
            for e in self.events.values()
            if (e.customer, e.period) == (customer, period)
            and e.counts_region
            and not self._superseded(e)
        )

    def _tick(self):
        self.serial += 1
        return self.serial

    # -- rules -----------------------------------------------------------------------------------

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        period=st.integers(0, 1),
        day=st.integers(0, 2),
        value=st.integers(1, 60),
        eu=st.booleans(),
    )
    def send(self, customer, period, day, value, eu):
        serial = self._tick()
        key = f"k{serial}"
        (outcome,) = ingest.ingest(
            [
                {
                    "customer_id": customer,
                    "metric_key": "api_calls",
                    "value": value,
                    "timestamp": _instant(period, day, serial % 50).isoformat(),
                    "idempotency_key": key,
                    "properties": {"region": "eu" if eu else "us"},
                }
            ],
            now=NOW,
        )
        if value > 50:
            assert (outcome.outcome, outcome.code) == ("invalid", "contract_violation")
            return
        assert outcome.outcome == "accepted"
        self.events[key] = Event(key, customer, period, day, value, eu, serial)

    @rule()
    def fold(self):
        aggregation.drain()

    @rule(customer=st.sampled_from(CUSTOMERS), period=st.integers(0, 1))
    def issue(self, customer, period):
        start, end = PERIODS[period], PERIODS[period + 1]
        draft, _ = lifecycle.create_draft(SYSTEM, self.subscriptions[customer], start, end)
        if draft["status"] == "draft":
            lifecycle.issue(SYSTEM, draft["id"])

    @rule(customer=st.sampled_from(CUSTOMERS), period=st.integers(0, 1))
    def void(self, customer, period):
        with get_database().transaction() as connection:
            live = connection.execute(
                text(
                    "SELECT id FROM invoices WHERE subscription_id = :s AND period_start = :p "
                    "AND status IN ('issued', 'payment_failed')"
                ),
                {"s": self.subscriptions[customer], "p": PERIODS[period]},
            ).scalar_one_or_none()
        if live is not None:
            lifecycle.void(SYSTEM, live, "model test")

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        period=st.integers(0, 1),
        day=st.integers(0, 2),
        values=st.lists(st.integers(1, 9), max_size=3),
    )
    def replace_a_day(self, customer, period, day, values):
        start = PERIODS[period] + timedelta(days=day)
        opened = corrections.create(
            SYSTEM,
            NewCorrection.model_validate(
                {
                    "metric_key": "api_calls",
                    "customer_id": customer,
                    "from": start.isoformat(),
                    "to": (start + timedelta(days=1)).isoformat(),
                    "mode": "replace",
                    "reason": "model",
                }
            ),
        )
        fix = Fix(opened["id"], "replace", customer, period, day)
        self.fixes[fix.id] = fix
        for value in values:
            serial = self._tick()
            key = f"fix{serial}"
            (outcome,) = corrections.add_events(
                SYSTEM,
                fix.id,
                [
                    {
                        "customer_id": customer,
                        "metric_key": "api_calls",
                        "value": value,
                        "timestamp": _instant(period, day, serial % 50).isoformat(),
                        "idempotency_key": key,
                        "properties": {"region": "eu"},
                    }
                ],
            )
            assert outcome.outcome == "accepted"
            self.events[key] = Event(key, customer, period, day, value, True, serial, fix.id)

    @rule(data=st.data())
    def retract(self, data):
        counting = sorted(k for k, e in self.events.items() if not self._superseded(e))
        if not counting:
            return
        key = data.draw(st.sampled_from(counting))
        event = self.events[key]
        if event.added_by is not None:
            return  # a correction's own event is undone by reverting it
        settled = corrections.retract_event(SYSTEM, key, "model")
        fix = Fix(settled["id"], "amend", event.customer, event.period, None, "applied")
        fix.retracted = {key}
        fix.applied_serial = self._tick()
        self.fixes[fix.id] = fix

    @rule(data=st.data())
    def apply(self, data):
        open_ = sorted(i for i, f in self.fixes.items() if f.status == "open")
        if not open_:
            return
        fix = self.fixes[data.draw(st.sampled_from(open_))]
        corrections.apply(SYSTEM, fix.id)
        fix.status, fix.applied_serial = "applied", self._tick()

    @rule(data=st.data())
    def revert(self, data):
        applied = sorted(i for i, f in self.fixes.items() if f.status == "applied")
        if not applied:
            return
        fix = self.fixes[data.draw(st.sampled_from(applied))]
        corrections.revert(SYSTEM, fix.id)
        fix.status = "reverted"

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def exact_usage_equals_the_model(self):
        if not hasattr(self, "subscriptions"):
            return
        for customer in CUSTOMERS:
            for period in range(2):
                exact = usage.exact_summary(
                    customer_id=customer,
                    metric_key="api_calls",
                    start=PERIODS[period],
                    end=PERIODS[period + 1],
                )
                assert exact["value"] == D(self._model_usage(customer, period)), (
                    customer,
                    period,
                )

    @invariant()
    def billed_periods_add_up_to_what_counts(self):
        if not hasattr(self, "subscriptions"):
            return
        aggregation.drain()  # what is billed catches up with what counts only once folded
        with get_database().transaction() as connection:
            invoices = connection.execute(
                text(
                    "SELECT id, subscription_id, period_start, lines FROM invoices "
                    "WHERE status IN ('issued', 'paid', 'payment_failed')"
                )
            ).all()
            adjusted = {
                (subscription, start): quantity
                for subscription, start, quantity in connection.execute(
                    text(
                        "SELECT i.subscription_id, i.period_start, sum(a.quantity_delta) "
                        "FROM adjustments a JOIN invoices i ON i.id = a.original_invoice_id "
                        "WHERE a.kind IN ('late_usage', 'correction', 'reversal') "
                        "AND a.cancelled_at IS NULL GROUP BY 1, 2"
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
            assert billed == D(self._model_usage(customer, period)), (customer, period)
        for customer in CUSTOMERS:
            for period in range(2):
                found = usage.summary(
                    mode="realtime",
                    customer_id=customer,
                    metric_key="api_calls",
                    start=PERIODS[period],
                    end=PERIODS[period + 1],
                )
                assert found["value"] == D(self._model_usage(customer, period))

    @invariant()
    def issued_lines_still_reproduce_their_checksums(self):
        if not hasattr(self, "subscriptions"):
            return
        with get_database().transaction() as connection:
            calculations = connection.execute(
                text(
                    "SELECT calculation_id FROM invoices "
                    "WHERE status IN ('issued', 'paid', 'payment_failed', 'void')"
                )
            ).scalars()
            calculation_ids = list(calculations)
        for calculation_id in calculation_ids:
            calculation = pricing.get_calculation(calculation_id)
            for number, line in enumerate(calculation["lines"], 1):
                if line["metric_key"] is None:
                    continue
                per_version: dict[int, tuple[int, int]] = {}
                cursor = None
                while True:
                    page, cursor = pricing.line_events(
                        calculation_id, number, cursor=cursor, limit=500
                    )
                    for event in page:
                        count, total = per_version.get(event["meter_version"], (0, 0))
                        digest = event_digest(
                            event["idempotency_key"], event["timestamp"], event["value"]
                        )
                        per_version[event["meter_version"]] = (count + 1, total + digest)
                    if cursor is None:
                        break
                assert line["events_checksum"] == "sha256:" + usage_checksum(per_version)


SEED = 5


def test_contracts_and_corrections_against_their_model(database_url):
    Corrections.database_url = database_url
    run_state_machine_as_test(
        seed(SEED)(Corrections),
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            print_blob=True,
        ),
    )
