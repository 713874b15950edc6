"""The pricing models with hand-worked examples (the arithmetic is written next to each
expectation) and their properties."""

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.money import round_to_currency
from core.domain.pricing.charges import CHARGE_ADAPTER
from core.domain.pricing.engine import REGISTRY, LineInput, lines, price
from core.domain.pricing.priced import PricingError, Usage

GRADUATED = {
    "metric_key": "storage_gb",
    "model": "tiered",
    "tiers": [
        {"up_to": "100", "unit_price": "0.10", "flat_fee": "5"},
        {"up_to": "200", "unit_price": "0.05", "flat_fee": "2"},
        {"up_to": None, "unit_price": "0.01"},
    ],
}
VOLUME = {**GRADUATED, "model": "volume"}


def charge(definition):
    return CHARGE_ADAPTER.validate_python(definition)


def amount(definition, quantity, **usage):
    return price(charge(definition), Usage(quantity=D(quantity), **usage)).amount


def test_every_model_is_registered():
    assert set(REGISTRY) == {
        "per_unit",
        "tiered",
        "volume",
        "package",
        "flat_fee",
        "matrix",
        "custom_formula",
    }


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", D("0")),  # nothing used: 0 * 0.001
        ("1234", D("1.234")),  # 1234 * 0.001
        ("0.0000000001", D("0.0000000000001")),  # fractional units at full precision
        ("9999999999", D("9999999.999")),  # huge: 9,999,999,999 * 0.001
        ("-5", D("0")),  # negative net usage bills as none
    ],
)
def test_per_unit(quantity, expected):
    assert (
        amount({"metric_key": "m", "model": "per_unit", "unit_price": "0.001"}, quantity)
        == expected
    )


def test_per_unit_with_a_ten_decimal_price():
    # 3 * 0.0000000007 = 0.0000000021, exact (no float in sight)
    definition = {"metric_key": "m", "model": "per_unit", "unit_price": "0.0000000007"}
    assert amount(definition, "3") == D("0.0000000021")


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", D("5")),  # first tier always reached: 0 * 0.10 + 5
        ("100", D("15")),  # exactly on the boundary: 100 * 0.10 + 5 = 15 (up_to inclusive)
        ("101", D("17.05")),  # one past: 15 + 1 * 0.05 + 2 = 17.05
        ("100.5", D("17.025")),  # fractional: 15 + 0.5 * 0.05 + 2
        ("200", D("22")),  # 15 + 100 * 0.05 + 2 = 22
        ("250", D("22.5")),  # 22 + 50 * 0.01 (last tier has no fee)
        ("1000000000", D("10000020.00")),  # 22 + (1e9 - 200) * 0.01 = 22 + 9,999,998
    ],
)
def test_graduated_tiers(quantity, expected):
    assert amount(GRADUATED, quantity) == expected


def test_graduated_breakdown_rows():
    rows = price(charge(GRADUATED), Usage(quantity=D("150"))).breakdown
    assert [(r["from"], r["to"], r["quantity"], r["amount"]) for r in rows] == [
        (D(0), D(100), D(100), D("15.00")),
        (D(100), D(200), D(50), D("4.50")),  # 50 * 0.05 + 2
    ]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", D("5")),  # first tier at 0: 0 * 0.10 + 5
        ("100", D("15")),  # 100 * 0.10 + 5, up_to inclusive
        ("101", D("7.05")),  # all 101 at 0.05 + 2
        ("250", D("2.5")),  # all 250 at 0.01, no fee
    ],
)
def test_volume_tiers(quantity, expected):
    result = price(charge(VOLUME), Usage(quantity=D(quantity)))
    assert result.amount == expected and len(result.breakdown) == 1


PACKAGE = {
    "metric_key": "emails",
    "model": "package",
    "package_size": "1000",
    "package_price": "5.00",
    "free_units": "100",
}


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", D("0")),  # ceil(max(0, 0 - 100) / 1000) = 0 packages
        ("100", D("0")),  # all free
        ("101", D("5")),  # ceil(1 / 1000) = 1 package
        ("1100", D("5")),  # ceil(1000 / 1000) = 1
        ("1101", D("10")),  # ceil(1001 / 1000) = 2
    ],
)
def test_package(quantity, expected):
    assert amount(PACKAGE, quantity) == expected


def test_flat_fee_is_prorated_by_days():
    fee = {"model": "flat_fee", "name": "Platform", "amount": "99.00"}
    assert amount(fee, "1", period_days=30, covered_days=30) == D("99.00")
    # 21 of 30 days: 99 * 21 / 30 = 69.3
    assert amount(fee, "1", period_days=30, covered_days=21) == D("69.3")
    assert amount(fee, "1", period_days=30, covered_days=0) == 0


MATRIX = {
    "metric_key": "compute_seconds",
    "model": "matrix",
    "prices": [
        {"match": {"region": "us", "tier": "gpu"}, "unit_price": "0.002"},
        {"match": {"region": "us"}, "unit_price": "0.0015"},
    ],
    "default_unit_price": "0.001",
}


def test_matrix_prices_each_group_by_its_first_matching_row():
    groups = (
        ({"region": "us", "tier": "gpu"}, D("1000")),  # 1000 * 0.002 = 2
        ({"region": "us", "tier": "cpu"}, D("1000")),  # 1000 * 0.0015 = 1.5
        ({"region": "eu", "tier": "gpu"}, D("1000")),  # default 1000 * 0.001 = 1
    )
    result = price(charge(MATRIX), Usage(quantity=D(3000), groups=groups))
    assert result.amount == D("4.5")
    assert [r["unit_price"] for r in result.breakdown] == [D("0.002"), D("0.0015"), D("0.001")]


def test_matrix_without_a_default_refuses_an_unmatched_group():
    strict = charge({**MATRIX, "default_unit_price": None})
    with pytest.raises(PricingError, match="no price row"):
        price(strict, Usage(quantity=D(1), groups=(({"region": "eu", "tier": "x"}, D(1)),)))


def test_custom_formula():
    formula = {
        "metric_key": "tokens",
        "model": "custom_formula",
        "formula": "max(0, quantity - 1000000) * 0.000002 + 10",
    }
    assert amount(formula, "500000") == D("10")  # max(0, -500000) * ... + 10
    assert amount(formula, "3000000") == D("14")  # 2,000,000 * 0.000002 + 10
    days = {"metric_key": "t", "model": "custom_formula", "formula": "quantity / period_days"}
    with pytest.raises(PricingError):
        amount(days, "5", period_days=0)


def test_lines_round_once_and_add_up_in_jpy_and_bhd():
    third = charge({"metric_key": "m", "model": "per_unit", "unit_price": "0.3333333333"})
    items = [LineInput(third, Usage(quantity=D(1)), metric_key="m") for _ in range(3)]
    yen, yen_total = lines(items, "JPY")
    # 0.3333333333 rounds to 0 yen per line (half-up at 0 decimals); total = sum of lines = 0
    assert [line["amount"] for line in yen] == [D(0)] * 3 and yen_total == 0
    dinar, dinar_total = lines(items, "BHD")
    # 0.3333333333 -> 0.333 BHD (3 decimals); total 0.999, not round(1.0) = 1.000
    assert [line["amount"] for line in dinar] == [D("0.333")] * 3 and dinar_total == D("0.999")
    half = charge({"metric_key": "m", "model": "per_unit", "unit_price": "0.005"})
    usd, _ = lines([LineInput(half, Usage(quantity=D(1)), metric_key="m")], "USD")
    assert usd[0]["amount"] == D("0.01")  # half-up: 0.005 -> 0.01


prices = st.decimals(0, 1000, places=10, allow_nan=False, allow_infinity=False)
quantities = st.decimals(0, 10**9, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def ladders(draw):
    bounds = sorted(draw(st.sets(st.integers(1, 10**6), min_size=1, max_size=4)))
    tiers = [
        {"up_to": str(b), "unit_price": str(draw(prices)), "flat_fee": str(draw(prices))}
        for b in bounds
    ]
    tiers.append({"up_to": None, "unit_price": str(draw(prices)), "flat_fee": str(draw(prices))})
    return tiers


@settings(max_examples=200)
@given(tiers=ladders(), a=quantities, b=quantities)
def test_graduated_is_monotone_and_never_negative(tiers, a, b):
    ladder = charge({"metric_key": "m", "model": "tiered", "tiers": tiers})
    low, high = sorted((a, b))
    low_amount = price(ladder, Usage(quantity=low)).amount
    assert 0 <= low_amount <= price(ladder, Usage(quantity=high)).amount


@settings(max_examples=200)
@given(tiers=ladders(), quantity=quantities)
def test_volume_uses_exactly_one_tier(tiers, quantity):
    result = price(
        charge({"metric_key": "m", "model": "volume", "tiers": tiers}), Usage(quantity=quantity)
    )
    (row,) = result.breakdown
    assert result.amount == quantity * row["unit_price"] + row["flat_fee"] >= 0


@settings(max_examples=200)
@given(unit=prices, a=quantities, b=quantities)
def test_per_unit_is_monotone(unit, a, b):
    definition = charge({"metric_key": "m", "model": "per_unit", "unit_price": str(unit)})
    low, high = sorted((a, b))
    assert (
        0
        <= price(definition, Usage(quantity=low)).amount
        <= price(definition, Usage(quantity=high)).amount
    )


@settings(max_examples=200)
@given(
    size=st.decimals("0.5", 10**4, places=2),
    package_price=prices,
    free=st.decimals(0, 10**4, places=2),
    quantity=quantities,
)
def test_package_is_ceil_of_billable_over_size_times_price(size, package_price, free, quantity):
    import math

    definition = charge(
        {
            "metric_key": "m",
            "model": "package",
            "package_size": str(size),
            "package_price": str(package_price),
            "free_units": str(free),
        }
    )
    expected = math.ceil(max(D(0), quantity - free) / size) * package_price
    assert price(definition, Usage(quantity=quantity)).amount == expected


@settings(max_examples=100)
@given(
    unit_prices=st.lists(prices, min_size=1, max_size=8),
    quantity=quantities,
    currency=st.sampled_from(["USD", "JPY", "BHD", "EUR"]),
)
def test_lines_sum_to_the_total_exactly_and_rerun_identically(unit_prices, quantity, currency):
    items = [
        LineInput(
            charge({"metric_key": "m", "model": "per_unit", "unit_price": str(p), "name": f"c{i}"}),
            Usage(quantity=quantity),
            metric_key="m",
        )
        for i, p in enumerate(unit_prices)
    ]
    priced, total = lines(items, currency)
    assert sum(line["amount"] for line in priced) == total
    assert all(
        line["amount"] == round_to_currency(line["unrounded_amount"], currency) for line in priced
    )
    assert lines(items, currency) == (priced, total)


@settings(max_examples=100)
@given(values=st.lists(st.decimals(0, 1000, places=3), min_size=1, max_size=30), data=st.data())
def test_a_sum_metrics_price_does_not_depend_on_batching(values, data):
    """Usage is the sum of the events however they were batched; the price follows."""
    cut = data.draw(st.integers(0, len(values)))
    batched = sum(values[:cut], D(0)) + sum(values[cut:], D(0))
    ladder = charge(GRADUATED)
    assert price(ladder, Usage(quantity=batched)) == price(
        ladder, Usage(quantity=sum(values, D(0)))
    )
