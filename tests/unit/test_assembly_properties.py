"""Properties of invoice assembly (core/domain/invoices/assembly.py) over random inputs:
the documented order of steps, no charge below zero, commitments clamp the period's
charges, discounts never take more than what is left, and the same inputs give the same
invoice."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.invoices.assembly import AssemblyInputs, CarriedAdjustment, assemble
from core.domain.invoices.commitments import Commitment
from core.domain.invoices.discounts import AppliedDiscount

METRICS = ("api_calls", "tokens", "storage")
ORDER = {"usage": 0, "adjustment": 0, "commitment": 1, "discount": 2}
ZERO = Decimal(0)

cents = st.integers(min_value=0, max_value=500_000).map(lambda n: Decimal(n).scaleb(-2))
signed_cents = st.integers(min_value=-50_000, max_value=50_000).map(lambda n: Decimal(n).scaleb(-2))


@st.composite
def usage_lines(draw: st.DrawFn) -> tuple[dict[str, object], ...]:
    count = draw(st.integers(min_value=0, max_value=5))
    return tuple(
        {
            "charge": f"charge {n}",
            "metric_key": draw(st.sampled_from((*METRICS, None))),
            "amount": str(draw(cents)),
        }
        for n in range(count)
    )


@st.composite
def commitments(draw: st.DrawFn) -> Commitment | None:
    if draw(st.booleans()):
        return None
    minimum = draw(st.none() | cents)
    maximum = draw(st.none() | cents)
    if minimum is not None and maximum is not None and maximum < minimum:
        minimum, maximum = maximum, minimum
    period_days = draw(st.integers(min_value=28, max_value=31))
    billed_days = draw(st.integers(min_value=0, max_value=period_days))
    return Commitment(minimum, maximum, period_days, billed_days)


@st.composite
def discounts(draw: st.DrawFn) -> tuple[AppliedDiscount, ...]:
    count = draw(st.integers(min_value=0, max_value=4))
    found = []
    for n in range(count):
        percent = draw(st.booleans())
        keys = draw(st.none() | st.lists(st.sampled_from(METRICS), min_size=1, max_size=2))
        found.append(
            AppliedDiscount(
                id=f"dsc_{n}",
                coupon_code=f"c{n}",
                name=f"Coupon {n}",
                percent_off=Decimal(draw(st.integers(min_value=1, max_value=100)))
                if percent
                else None,
                amount_off=None if percent else draw(cents.filter(lambda a: a > 0)),
                metric_keys=None if keys is None else tuple(dict.fromkeys(keys)),
            )
        )
    return tuple(found)


@st.composite
def inputs(draw: st.DrawFn) -> AssemblyInputs:
    adjustments = tuple(
        CarriedAdjustment(id=f"adj_{n}", kind="manual", description="x", amount=amount)
        for n, amount in enumerate(draw(st.lists(signed_cents, max_size=3)))
    )
    return AssemblyInputs(
        currency="USD",
        usage_lines=draw(usage_lines()),
        adjustments=adjustments,
        commitment=draw(commitments()),
        discounts=draw(discounts()),
    )


def _sum(lines, *types):
    return sum((Decimal(line["amount"]) for line in lines if line["type"] in types), ZERO)


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_steps_come_in_the_documented_order(found: AssemblyInputs) -> None:
    lines = assemble(found).lines
    ranks = [ORDER[line["type"]] for line in lines]
    assert ranks == sorted(ranks)
    assert [line["line"] for line in lines] == list(range(1, len(lines) + 1))


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_no_charge_goes_below_zero(found: AssemblyInputs) -> None:
    result = assemble(found)
    for line in result.lines:
        amount = Decimal(line["amount"])
        if line["type"] == "usage" or line.get("kind") == "minimum_commitment":
            assert amount >= 0
        if line["type"] == "discount" or line.get("kind") == "maximum_charge":
            assert amount < 0
    period = _sum(result.lines, "usage", "commitment", "discount")
    assert period >= 0  # the period's charges after discounts
    assert result.total >= 0 and result.total == max(result.subtotal, ZERO)
    assert result.total - result.credit_carried == result.subtotal


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_commitments_clamp_the_periods_charges(found: AssemblyInputs) -> None:
    lines = assemble(found).lines
    usage = _sum(lines, "usage")
    after = usage + _sum(lines, "commitment")
    commitment = found.commitment
    expected = usage
    if commitment is not None:
        if commitment.minimum is not None:
            expected = max(expected, commitment.prorated(commitment.minimum, "USD"))
        if commitment.maximum is not None:
            expected = min(expected, commitment.prorated(commitment.maximum, "USD"))
    assert after == expected


@settings(max_examples=400, deadline=None)
@given(inputs())
def test_discounts_take_at_most_what_is_left(found: AssemblyInputs) -> None:
    lines = assemble(found).lines
    before = _sum(lines, "usage", "commitment")
    taken = -_sum(lines, "discount")
    assert ZERO <= taken <= max(before, ZERO)
    by_metric: dict[str, Decimal] = {}
    for line in lines:
        if line["type"] == "usage" and line.get("metric_key"):
            by_metric[line["metric_key"]] = by_metric.get(line["metric_key"], ZERO) + Decimal(
                line["amount"]
            )
    for discount_line in (line for line in lines if line["type"] == "discount"):
        keys = discount_line["metric_keys"]
        if keys is not None:
            assert -Decimal(discount_line["amount"]) <= sum(
                (by_metric.get(k, ZERO) for k in keys), ZERO
            )
    # The order of redemption decides: each discount line follows its redemption order.
    ids = [line["discount_id"] for line in lines if line["type"] == "discount"]
    order = [d.id for d in found.discounts]
    assert ids == [i for i in order if i in ids]


@settings(max_examples=200, deadline=None)
@given(inputs())
def test_the_same_inputs_give_the_same_invoice(found: AssemblyInputs) -> None:
    assert assemble(found) == assemble(found)


def test_a_worked_example_of_every_step() -> None:
    """Usage 300 + fee 99 under a minimum of 500 (true-up 101), then 10% off (-50), then
    25 off (-25): 425."""
    result = assemble(
        AssemblyInputs(
            currency="USD",
            usage_lines=(
                {"charge": "api_calls", "metric_key": "api_calls", "amount": "300"},
                {"charge": "Platform fee", "metric_key": None, "amount": "99"},
            ),
            commitment=Commitment(Decimal(500), None, 30, 30),
            discounts=(
                AppliedDiscount("dsc_1", "ten", "Ten percent", percent_off=Decimal(10)),
                AppliedDiscount("dsc_2", "flat", "Flat", amount_off=Decimal(25)),
            ),
        )
    )
    assert [(line["type"], line["amount"]) for line in result.lines] == [
        ("usage", "300"),
        ("usage", "99"),
        ("commitment", "101"),
        ("discount", "-50"),
        ("discount", "-25"),
    ]
    assert result.total == Decimal(425)
