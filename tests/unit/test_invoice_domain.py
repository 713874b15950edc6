"""The invoice domain, pure: the state machine admits exactly its table; assembly adds up
and is deterministic; the late-usage difference is idempotent; voiding touches only what
it must; numbering and dunning."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from core.domain.canonical import canonical_json, decimal_text
from core.domain.errors import Conflict
from core.domain.invoices import numbering, status
from core.domain.invoices.assembly import (
    AssemblyInputs,
    CarriedAdjustment,
    assemble,
    carried_ids,
    usage_lines,
)
from core.domain.invoices.late_usage import Billed, charge_key, differences, period_label
from core.domain.invoices.status import TRANSITIONS, InvoiceStatus
from core.domain.invoices.voiding import AdjustmentState, void_plan
from core.domain.payments import invoice_status_after, next_attempt_at

STATUSES = list(InvoiceStatus)
money = st.decimals(min_value=D("-100000"), max_value=D("100000"), places=2)
quantities = st.decimals(min_value=D(0), max_value=D("1000000"), places=3)


# -- the state machine ---------------------------------------------------------------------


@given(st.sampled_from(STATUSES), st.sampled_from(STATUSES))
def test_a_transition_is_allowed_exactly_when_the_table_lists_it(current, target):
    listed = target in TRANSITIONS[current]
    assert status.allowed(current, target) is listed
    if listed:
        status.require(current, target, "inv_x")
    else:
        with pytest.raises(Conflict) as refused:
            status.require(current, target, "inv_x")
        assert refused.value.code == f"invoice_{current.value}"


class InvoiceLife(RuleBasedStateMachine):
    """Random attempts at every transition from a draft: only the table's happen, the
    predicates agree with the state reached, and a final state never moves again."""

    def __init__(self):
        super().__init__()
        self.state = InvoiceStatus.DRAFT
        self.history = [self.state]

    @rule(wanted=st.sampled_from(STATUSES))
    def attempt(self, wanted):
        target = wanted
        before = self.state
        try:
            status.require(before, target, "inv_x")
        except Conflict:
            assert target not in TRANSITIONS[before]
            return
        assert target in TRANSITIONS[before]
        self.state = target
        self.history.append(target)

    @invariant()
    def predicates_agree(self):
        s = self.state
        assert status.refreshable(s) == status.issuable(s) == (s is InvoiceStatus.DRAFT)
        assert status.binding(s) == (s in {"issued", "paid", "payment_failed"})
        assert status.chargeable(s) == (s in {"issued", "payment_failed"})
        assert status.settled(s) == (s in {"paid", "void"})
        assert status.voidable(s) == (s in {"draft", "issued", "payment_failed"})
        assert status.live(s) == (s is not InvoiceStatus.VOID)

    @invariant()
    def never_back_to_draft_and_numbered_once(self):
        assert self.history.count(InvoiceStatus.DRAFT) == 1
        assert self.history.count(InvoiceStatus.ISSUED) <= 1


TestInvoiceLife = InvoiceLife.TestCase


# -- assembly -------------------------------------------------------------------------------


@st.composite
def usage_line(draw, number):
    return {
        "line": number,
        "charge": draw(st.sampled_from(["api_calls", "storage", "Platform fee"])),
        "model": "per_unit",
        "metric_key": "api_calls",
        "meter_version": 1,
        "quantity": decimal_text(draw(quantities)),
        "amount": decimal_text(abs(draw(money))),
    }


@st.composite
def inputs(draw):
    count = draw(st.integers(0, 6))
    lines = tuple(draw(usage_line(n)) for n in range(1, count + 1))
    adjustments = tuple(
        CarriedAdjustment(
            id=f"adj_{n}",
            kind=draw(st.sampled_from(["late_usage", "manual", "credit_carried", "reversal"])),
            description=draw(st.text(max_size=20)),
            amount=draw(money),
            quantity=draw(st.none() | quantities),
        )
        for n in range(draw(st.integers(0, 5)))
    )
    return AssemblyInputs(currency="USD", usage_lines=lines, adjustments=adjustments)


@given(inputs())
def test_assembly_adds_up_and_never_asks_below_zero(given_inputs):
    assembled = assemble(given_inputs)
    assert assembled.subtotal == sum((D(line["amount"]) for line in assembled.lines), D(0))
    assert assembled.total == max(assembled.subtotal, D(0))
    assert assembled.credit_carried == max(-assembled.subtotal, D(0))
    assert assembled.total - assembled.credit_carried == assembled.subtotal
    assert [line["line"] for line in assembled.lines] == list(range(1, len(assembled.lines) + 1))
    # usage and fees first, then what it carries, each adjustment once, in the given order
    assert len(usage_lines(assembled.lines)) == len(given_inputs.usage_lines)
    assert all(line["type"] == "usage" for line in assembled.lines[: len(given_inputs.usage_lines)])
    assert carried_ids(assembled.lines) == tuple(a.id for a in given_inputs.adjustments)


@given(inputs())
def test_assembling_the_same_inputs_gives_byte_identical_output(given_inputs):
    first, again = assemble(given_inputs), assemble(given_inputs)
    assert canonical_json(first.__dict__) == canonical_json(again.__dict__)


def test_assembly_runs_its_steps_in_order():
    calls = []

    def step(name):
        def run(lines, _inputs):
            calls.append(name)
            return (*lines, {"type": "usage", "amount": "1", "name": name})

        return run

    assembled = assemble(AssemblyInputs("USD"), steps=[step("usage"), step("discounts")])
    assert calls == ["usage", "discounts"]
    assert [line["name"] for line in assembled.lines] == ["usage", "discounts"]


# -- late usage -------------------------------------------------------------------------------


charges = st.sampled_from(["api_calls", "overage"])


@st.composite
def priced(draw):
    return [
        {
            "charge": charge,
            "metric_key": "api_calls",
            "meter_version": version,
            "quantity": decimal_text(draw(quantities)),
            "amount": decimal_text(abs(draw(money))),
        }
        for charge, version in sorted(draw(st.sets(st.tuples(charges, st.integers(1, 2)))))
    ]


@given(
    priced(),
    priced(),
    st.dictionaries(st.sampled_from(["api_calls#1", "overage#2"]), st.tuples(quantities, money)),
)
def test_the_late_usage_difference_makes_billed_equal_repriced_and_is_then_empty(
    repriced, invoiced, already
):
    adjusted = {key: Billed(q, a) for key, (q, a) in already.items()}
    found = differences(repriced, invoiced, adjusted, "api_calls")
    after = dict(adjusted)
    for difference in found:
        before = after.get(difference.charge, Billed())
        after[difference.charge] = Billed(
            before.quantity + difference.quantity, before.amount + difference.amount
        )
    billed = {charge_key(line): line for line in invoiced}
    for line in repriced:
        key = charge_key(line)
        total = after.get(key, Billed())
        assert D(billed[key]["quantity"] if key in billed else 0) + total.quantity == D(
            line["quantity"]
        )
        assert D(billed[key]["amount"] if key in billed else 0) + total.amount == D(line["amount"])
    assert differences(repriced, invoiced, after, "api_calls") == []  # nothing twice


def test_period_labels():
    june = datetime(2026, 6, 1, tzinfo=UTC)
    assert period_label(june, datetime(2026, 7, 1, tzinfo=UTC)) == "June 2026"
    assert period_label(june + timedelta(days=9), june + timedelta(days=39)) == (
        "2026-06-10 to 2026-07-10"
    )


# -- voiding ----------------------------------------------------------------------------------


@st.composite
def around(draw):
    found = []
    for n in range(draw(st.integers(0, 8))):
        carried_by_it = draw(st.booleans())
        kind = draw(st.sampled_from(["late_usage", "credit_carried", "manual", "void_credit"]))
        applied = "inv_v" if carried_by_it else draw(st.sampled_from([None, "inv_other"]))
        found.append(
            AdjustmentState(
                id=f"adj_{n}",
                kind=kind,
                original_invoice_id=None if carried_by_it else "inv_v",
                applied_invoice_id=applied,
                cancelled=applied is None and draw(st.booleans()),
                carrier_binding=applied is not None,
            )
        )
    return found


@given(around())
def test_voiding_releases_what_it_carried_and_annuls_what_was_born_of_it(adjustments):
    plan = void_plan("inv_v", adjustments)
    by_id = {a.id: a for a in adjustments}
    assert set(plan.release).isdisjoint(plan.cancel) and set(plan.cancel).isdisjoint(plan.reverse)
    for adjustment_id in plan.release:
        assert by_id[adjustment_id].applied_invoice_id == "inv_v"
        assert by_id[adjustment_id].kind != "void_credit"
    for adjustment_id in plan.cancel:
        assert by_id[adjustment_id].applied_invoice_id is None
    for adjustment_id in (*plan.cancel, *plan.reverse):
        assert by_id[adjustment_id].kind in {"late_usage", "credit_carried"}
        assert not by_id[adjustment_id].cancelled
    for adjustment in adjustments:  # nothing born of its content is left standing
        if (
            adjustment.original_invoice_id == "inv_v"
            and adjustment.kind
            in {
                "late_usage",
                "credit_carried",
            }
            and not adjustment.cancelled
        ):
            assert adjustment.id in (*plan.cancel, *plan.reverse)


# -- numbering and payments ----------------------------------------------------------------


def test_numbers_are_the_series_and_six_digits():
    issued = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert numbering.number(numbering.series("ABX", issued), 42) == "ABX-2026-000042"
    with pytest.raises(ValueError):
        numbering.number("ABX-2026", 0)


def test_dunning_and_what_a_payment_does_to_its_invoice():
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert next_attempt_at(1, [1, 3, 7], now) == now + timedelta(days=1)
    assert next_attempt_at(3, [1, 3, 7], now) == now + timedelta(days=7)
    assert next_attempt_at(4, [1, 3, 7], now) is None
    assert invoice_status_after("succeeded") is InvoiceStatus.PAID
    assert invoice_status_after("failed") is InvoiceStatus.PAYMENT_FAILED
    assert invoice_status_after("awaiting") is None
