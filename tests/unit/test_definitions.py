from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from core.domain.metrics import MetricDefinition
from core.domain.money import AmountError, minor_units, round_to_currency, to_decimal
from core.domain.periods import Interval, is_period_boundary, period_at, period_containing
from core.domain.pricing.charges import (
    CHARGE_ADAPTER,
    OverrideError,
    PlanVersionDefinition,
    apply_overrides,
)
from tests.fixtures.samples import API_EXAMPLE_CHARGES

T0 = "2026-01-01T00:00:00Z"


def _plan(*charges, currency="USD"):
    return PlanVersionDefinition.model_validate(
        {"name": "Pro", "currency": currency, "interval": "month", "charges": list(charges)}
    )


def _errors(call):
    with pytest.raises(ValidationError) as caught:
        call()
    return " | ".join(f"{e['loc']}: {e['msg']}" for e in caught.value.errors())


# -- money --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["0.0000000001", "9999999999.9999999999", 5, Decimal("1.50000000000"), "-3"]
)
def test_numbers_that_fit_numeric_20_10_are_accepted_exactly(value):
    assert to_decimal(value) == Decimal(str(value))


@pytest.mark.parametrize(
    "value",
    [0.1, True, "NaN", "Infinity", "1e10", "10000000000", "0.00000000001", " 1", "", "abc", None],
)
def test_numbers_that_do_not_fit_are_refused(value):
    with pytest.raises(AmountError):
        to_decimal(value)


def test_currency_minor_units_and_half_up_rounding():
    assert (minor_units("USD"), minor_units("JPY"), minor_units("BHD")) == (2, 0, 3)
    assert round_to_currency(Decimal("1.005"), "USD") == Decimal("1.01")
    assert round_to_currency(Decimal("2.5"), "JPY") == Decimal(3)
    assert round_to_currency(Decimal("0.0005"), "BHD") == Decimal("0.001")
    with pytest.raises(AmountError):
        minor_units("ZZZ")


# -- periods ------------------------------------------------------------------------------


def _at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_month_periods_anchored_on_the_31st_follow_the_calendar():
    anchor = _at("2026-01-31T00:00:00Z")
    starts = [period_at(anchor, Interval.MONTH, k).start.date().isoformat() for k in range(5)]
    assert starts == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]


def test_leap_year_february_and_yearly_anchor_on_february_29th():
    assert (
        period_at(_at("2028-01-31T00:00:00Z"), Interval.MONTH, 1).start.date().isoformat()
        == "2028-02-29"
    )
    yearly = [
        period_at(_at("2028-02-29T00:00:00Z"), Interval.YEAR, k).start.date().isoformat()
        for k in range(5)
    ]
    assert yearly == ["2028-02-29", "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]


@pytest.mark.parametrize(
    ("interval", "instant", "start", "end"),
    [
        (
            Interval.DAY,
            "2026-03-05T13:00:00Z",
            "2026-03-05T09:30:00+00:00",
            "2026-03-06T09:30:00+00:00",
        ),
        (
            Interval.WEEK,
            "2026-03-05T13:00:00Z",
            "2026-03-01T09:30:00+00:00",
            "2026-03-08T09:30:00+00:00",
        ),
        (
            Interval.MONTH,
            "2026-04-01T09:29:59Z",
            "2026-03-01T09:30:00+00:00",
            "2026-04-01T09:30:00+00:00",
        ),
        (
            Interval.MONTH,
            "2026-04-01T09:30:00Z",
            "2026-04-01T09:30:00+00:00",
            "2026-05-01T09:30:00+00:00",
        ),
        (
            Interval.QUARTER,
            "2026-07-01T00:00:00Z",
            "2026-06-01T09:30:00+00:00",
            "2026-09-01T09:30:00+00:00",
        ),
        (
            Interval.YEAR,
            "2030-01-01T00:00:00Z",
            "2029-03-01T09:30:00+00:00",
            "2030-03-01T09:30:00+00:00",
        ),
    ],
)
def test_the_period_containing_an_instant_is_half_open(interval, instant, start, end):
    period = period_containing(_at("2026-03-01T09:30:00Z"), interval, _at(instant))
    assert (period.start.isoformat(), period.end.isoformat()) == (start, end)


def test_period_boundaries_and_instants_before_the_anchor():
    anchor = _at(T0)
    assert is_period_boundary(anchor, Interval.MONTH, _at("2026-02-01T00:00:00Z"))
    assert not is_period_boundary(anchor, Interval.MONTH, _at("2026-02-01T00:00:01Z"))
    with pytest.raises(ValueError, match="before"):
        period_containing(anchor, Interval.MONTH, _at("2025-12-31T23:59:59Z"))
    with pytest.raises(ValueError, match="naive"):
        period_containing(datetime(2026, 1, 1), Interval.MONTH, datetime(2026, 2, 1, tzinfo=UTC))


# -- metrics ------------------------------------------------------------------------------


def _metric(**fields):
    return MetricDefinition.model_validate(
        {
            "key": "api_calls",
            "name": "API calls",
            "aggregation": "sum",
            "effective_from": T0,
            **fields,
        }
    )


def test_metric_aggregation_parameters_are_checked():
    assert (
        _metric(aggregation="unique_count", unique_property="patient_id").unique_property
        == "patient_id"
    )
    assert _metric(aggregation="percentile", percentile="99.9").percentile == Decimal("99.9")
    assert "unique_property" in _errors(lambda: _metric(aggregation="unique_count"))
    assert "percentile" in _errors(lambda: _metric(aggregation="percentile", percentile="0"))
    assert "percentile" in _errors(lambda: _metric(aggregation="percentile", percentile="100.5"))
    assert "only for" in _errors(lambda: _metric(unique_property="x"))
    assert "distinct" in _errors(lambda: _metric(group_by=["region", "region"]))
    assert "UTC offset" in _errors(lambda: _metric(effective_from="2026-01-01T00:00:00"))
    assert "pattern" in _errors(lambda: _metric(key="API Calls"))
    assert "aggregation" in _errors(lambda: _metric(aggregation="median"))


# -- charges ------------------------------------------------------------------------------


def test_all_seven_models_validate_as_in_the_api_example():
    plan = _plan(*API_EXAMPLE_CHARGES)
    assert [c.model for c in plan.charges] == [
        "per_unit",
        "tiered",
        "volume",
        "package",
        "flat_fee",
        "matrix",
        "custom_formula",
    ]
    assert [c.label for c in plan.charges][4] == "Platform fee"
    assert plan.metric_keys() == {
        "api_calls",
        "storage_gb",
        "seats",
        "emails",
        "compute_seconds",
        "tokens",
    }
    assert plan.charges[1].tiers[1].flat_fee == Decimal(0)


@pytest.mark.parametrize(
    ("charge", "fragment"),
    [
        (
            {"metric_key": "x", "model": "per_unit_typo", "unit_price": "1"},
            "does not match any of the expected tags",
        ),
        ({"metric_key": "x", "model": "per_unit", "unit_price": "-1"}, "must be >= 0"),
        (
            {"metric_key": "x", "model": "per_unit", "unit_price": "0.00000000001"},
            "10 decimal places",
        ),
        ({"metric_key": "x", "model": "per_unit", "unit_price": 0.1}, "not a float"),
        ({"metric_key": "x", "model": "per_unit", "unit_price": "1", "extra": 1}, "Extra inputs"),
        ({"metric_key": "x", "model": "tiered", "tiers": []}, "at least 1"),
        (
            {"metric_key": "x", "model": "tiered", "tiers": [{"up_to": "10", "unit_price": "1"}]},
            "last tier must have up_to null",
        ),
        (
            {
                "metric_key": "x",
                "model": "tiered",
                "tiers": [{"up_to": None, "unit_price": "1"}, {"up_to": None, "unit_price": "1"}],
            },
            "only the last tier",
        ),
        (
            {
                "metric_key": "x",
                "model": "volume",
                "tiers": [
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": "10", "unit_price": "1"},
                    {"up_to": None, "unit_price": "1"},
                ],
            },
            "greater than tier 0",
        ),
        (
            {
                "metric_key": "x",
                "model": "volume",
                "tiers": [{"up_to": "0", "unit_price": "1"}, {"up_to": None, "unit_price": "1"}],
            },
            "must be > 0",
        ),
        (
            {"metric_key": "x", "model": "package", "package_size": "0", "package_price": "5"},
            "must be > 0",
        ),
        ({"model": "flat_fee", "amount": "-5"}, "must be >= 0"),
        ({"metric_key": "x", "model": "matrix", "prices": []}, "at least 1"),
        (
            {"metric_key": "x", "model": "custom_formula", "formula": "__import__('os')"},
            "may be called",
        ),
    ],
)
def test_invalid_charges_are_refused_at_plan_creation(charge, fragment):
    assert fragment in _errors(lambda: _plan(charge))


def test_plan_currency_and_charge_names():
    assert "ISO 4217" in _errors(
        lambda: _plan({"model": "flat_fee", "amount": "1"}, currency="ZZZ")
    )
    duplicate = {"metric_key": "x", "model": "per_unit", "unit_price": "1"}
    assert "distinct names" in _errors(lambda: _plan(duplicate, duplicate))
    assert len(_plan(duplicate, {**duplicate, "name": "x-eu"}).charges) == 2


def test_overrides_replace_fields_of_one_charge_and_are_validated_like_it():
    plan = _plan(
        {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.001"},
        {"model": "flat_fee", "name": "Platform fee", "amount": "99"},
    )
    charges = apply_overrides(
        plan.charges,
        [
            {"metric_key": "api_calls", "unit_price": "0.0008"},
            {"charge": "Platform fee", "amount": "0"},
        ],
    )
    assert charges[0].unit_price == Decimal("0.0008") and charges[1].amount == Decimal(0)
    assert plan.charges[0].unit_price == Decimal("0.001")  # the plan itself is untouched
    for override, fragment in [
        ({"metric_key": "nope", "unit_price": "1"}, "0 charges match"),
        ({"unit_price": "1"}, "names its charge"),
        ({"metric_key": "api_calls", "model": "tiered"}, "cannot change a charge's model"),
        ({"metric_key": "api_calls"}, "at least one field"),
    ]:
        with pytest.raises(OverrideError, match=fragment):
            apply_overrides(plan.charges, [override])
    with pytest.raises(OverrideError, match="unit_price: Value error, must be >= 0") as caught:
        apply_overrides(
            plan.charges,
            [
                {"charge": "Platform fee", "amount": "1"},
                {"metric_key": "api_calls", "unit_price": "-1"},
            ],
        )
    assert caught.value.index == 1


def test_a_charge_round_trips_through_json_exactly():
    charge = CHARGE_ADAPTER.validate_python(
        {"metric_key": "x", "model": "package", "package_size": "1000", "package_price": "5.00"}
    )
    assert CHARGE_ADAPTER.dump_python(charge, mode="json") == {
        "name": None,
        "model": "package",
        "metric_key": "x",
        "package_size": "1000",
        "package_price": "5",
        "free_units": "0",
    }
