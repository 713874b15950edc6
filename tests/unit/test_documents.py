"""What an invoice document says: amounts half-up in the currency's minor units and
grouped, prices and breakdowns exact, dates as dates, a period as its first and last day,
every pricing model's breakdown readable (core/domain/documents.py,
core/domain/invoice_document.py)."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.canonical import canonical_json
from core.domain.documents import (
    OPEN_END,
    READABLE,
    breakdown,
    decimal_of,
    format_amount,
    format_date,
    format_exact,
    format_period,
    format_price,
    period_days,
    text_table,
)
from core.domain.invoice_document import invoice_document, referenced_invoices
from core.domain.money import round_to_currency
from core.domain.periods import Interval, period_at
from core.domain.pricing.charges import CHARGE_ADAPTER
from core.domain.pricing.engine import REGISTRY, LineInput, line
from core.domain.pricing.priced import Usage

CURRENCIES = ("USD", "EUR", "JPY", "BHD", "KWD", "CLF")
amounts = st.decimals(
    min_value=D("-9999999999.9999999999"),
    max_value=D("9999999999.9999999999"),
    places=10,
    allow_nan=False,
    allow_infinity=False,
)


def ungrouped(text):
    return D(text.replace(",", "").removeprefix("≈ "))


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        ("1234.5", "USD", "1,234.50"),
        ("99", "USD", "99.00"),
        ("0", "USD", "0.00"),
        ("0.005", "USD", "0.01"),  # half-up, where Babel alone would round half-even to 0.00
        ("0.015", "USD", "0.02"),
        ("-0.005", "USD", "-0.01"),  # half-up is away from zero
        ("1234.5", "JPY", "1,235"),
        ("2.5", "JPY", "3"),
        ("1.2345", "BHD", "1.235"),
        ("1234567.891", "EUR", "1,234,567.89"),
        ("-50", "USD", "-50.00"),
    ],
)
def test_amounts_are_rounded_half_up_to_the_minor_units_and_grouped(amount, currency, shown):
    assert format_amount(amount, currency) == shown


@settings(max_examples=300, deadline=None)
@given(amounts, st.sampled_from(CURRENCIES))
def test_an_amount_shows_exactly_the_rounded_value_with_the_currency_places(amount, currency):
    shown = format_amount(str(amount), currency)
    assert ungrouped(shown) == round_to_currency(amount, currency)
    places = len(shown.partition(".")[2])
    assert places == {"JPY": 0, "BHD": 3, "KWD": 3, "CLF": 4}.get(currency, 2)
    integer = shown.lstrip("-").partition(".")[0]
    assert all(len(group) == 3 for group in integer.split(",")[1:])  # thousands grouped


@settings(max_examples=300, deadline=None)
@given(amounts, st.sampled_from(CURRENCIES))
def test_a_price_is_shown_exactly_as_stored(value, currency):
    shown = format_price(str(value), currency)
    assert ungrouped(shown) == value
    assert not shown.startswith("≈")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.01", "0.01"),
        ("0.5", "0.50"),  # padded to the currency's places, never cut
        ("0.00125", "0.00125"),
        ("1234.5678", "1,234.5678"),
        ("10", "10.00"),
    ],
)
def test_unit_prices_keep_every_place_they_have(value, shown):
    assert format_price(value, "USD") == shown


def test_a_computed_ratio_past_ten_places_is_rounded_there_and_marked():
    third = D(10) / D(3)
    assert format_price(third, "USD") == "≈ 3.3333333333"
    assert format_exact("2" + "0" * 20) == "200,000,000,000,000,000,000"


def test_floats_are_refused():
    with pytest.raises(TypeError):
        decimal_of(0.1)
    with pytest.raises(TypeError):
        format_amount(1.5, "USD")


def test_dates_are_utc_calendar_dates():
    assert format_date("2026-12-05T23:30:00Z") == "5 December 2026"
    assert format_date("2026-12-05T23:30:00-02:00") == "6 December 2026"  # 01:30 UTC
    assert format_date(datetime(2026, 1, 9, tzinfo=UTC)) == "9 January 2026"
    assert format_date(None) is None
    with pytest.raises(ValueError, match="naive"):
        format_date(datetime(2026, 1, 9))


def test_a_period_is_shown_as_its_first_and_last_day():
    assert format_period("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z") == (
        "1 June 2026 \u2013 30 June 2026"
    )
    assert format_period("2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z") == (
        "1 February 2028 \u2013 29 February 2028"
    )
    # anchored mid-day: the last day is the one the period's last instant falls on
    assert format_period("2026-01-15T12:00:00Z", "2026-02-15T12:00:00Z") == (
        "15 January 2026 \u2013 15 February 2026"
    )


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(list(Interval)),
    st.integers(min_value=0, max_value=50),
)
def test_consecutive_periods_show_consecutive_days_without_overlap(anchor, interval, index):
    this, following = period_at(anchor, interval, index), period_at(anchor, interval, index + 1)
    first, last = period_days(this.start, this.end)
    next_first, _ = period_days(following.start, following.end)
    assert first == this.start.date() and first <= last
    # midnight-aligned periods tile the calendar: the next starts the day after this ends
    if this.end.time() == datetime.min.time():
        assert next_first == last + timedelta(days=1)
    else:
        assert next_first == last


GRADUATED = {
    "metric_key": "storage_gb",
    "model": "tiered",
    "tiers": [
        {"up_to": "100", "unit_price": "0.10", "flat_fee": "5"},
        {"up_to": "200", "unit_price": "0.05", "flat_fee": "2"},
        {"up_to": None, "unit_price": "0.00125"},
    ],
}


def priced_line(definition, quantity="0", currency="USD", **usage):
    """A line exactly as the engine writes it, after the canonical JSON an invoice holds."""
    charge = CHARGE_ADAPTER.validate_python(definition)
    item = LineInput(
        charge=charge,
        usage=Usage(quantity=D(quantity), **usage),
        metric_key=getattr(charge, "metric_key", None),
        meter_version=1 if getattr(charge, "metric_key", None) else None,
    )
    return json.loads(canonical_json(line(1, item, currency)))


def readable(priced, currency="USD"):
    return breakdown(
        priced["model"],
        priced["breakdown"],
        currency,
        unrounded=priced["unrounded_amount"],
        amount=priced["amount"],
    )


def test_every_pricing_model_has_a_readable_breakdown():
    assert set(READABLE) == set(REGISTRY)


def test_a_graduated_breakdown_is_a_tier_table_with_an_open_last_tier():
    # 250 units: 100 x 0.10 + 5 | 100 x 0.05 + 2 | 50 x 0.00125 = 15 + 7 + 0.0625 = 22.0625
    shown = readable(priced_line(GRADUATED, "250"))
    assert shown.table is not None
    assert shown.table.headers == ("From", "To", "Units", "Unit price", "Flat fee", "Amount")
    assert shown.table.rows == (
        ("0", "100", "100", "0.10", "5.00", "15.00"),
        ("100", "200", "100", "0.05", "2.00", "7.00"),
        ("200", OPEN_END, "50", "0.00125", "0.00", "0.0625"),
    )
    assert shown.notes[-1] == "Exact amount 22.0625, rounded half-up to 22.06."


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(min_value=0, max_value=D(10) ** 7, places=3, allow_nan=False),
    st.sampled_from(["tiered", "volume"]),
)
def test_a_tier_table_shows_every_priced_tier_exactly(quantity, model):
    priced = priced_line({**GRADUATED, "model": model}, str(quantity))
    table = readable(priced).table
    assert table is not None and len(table.rows) == len(priced["breakdown"])
    for shown, row in zip(table.rows, priced["breakdown"], strict=True):
        assert ungrouped(shown[2]) == D(row["quantity"])
        assert ungrouped(shown[3]) == D(row["unit_price"])  # never rounded
        assert ungrouped(shown[5]) == D(row["amount"])
    assert sum(ungrouped(row[5]) for row in table.rows) == D(priced["unrounded_amount"])


def test_the_other_models_explain_themselves():
    per_unit = priced_line({"metric_key": "m", "model": "per_unit", "unit_price": "0.01"}, "300")
    assert readable(per_unit).notes == ("300 units at 0.01 each.",)
    package = priced_line(
        {
            "metric_key": "m",
            "model": "package",
            "package_size": "100",
            "package_price": "20",
            "free_units": "50",
        },
        "1250",
    )
    assert readable(package).notes == (
        "1,250 units, 50 free: 1,200 billable units in packages of 100 = 12 packages at 20.00.",
    )
    prorated = priced_line(
        {"model": "flat_fee", "amount": "10"}, "0", period_days=30, covered_days=12
    )
    assert readable(prorated).notes == ("10.00 per period, prorated for 12 of 30 days.",)
    full = priced_line({"model": "flat_fee", "amount": "10"}, "0", period_days=30, covered_days=30)
    assert readable(full).notes == ()
    third = priced_line({"model": "flat_fee", "amount": "10"}, "0", period_days=30, covered_days=10)
    assert readable(third).notes[-1] == "Exact amount ≈ 3.3333333333, rounded half-up to 3.33."
    formula = priced_line(
        {"metric_key": "m", "model": "custom_formula", "formula": "quantity * 2"}, "7"
    )
    assert readable(formula).notes == (
        "Formula quantity * 2 with quantity = 7 and period_days = 0.",
    )


def test_a_matrix_breakdown_is_a_table_per_group():
    priced = priced_line(
        {
            "metric_key": "m",
            "model": "matrix",
            "prices": [{"match": {"region": "eu"}, "unit_price": "0.02"}],
            "default_unit_price": "0.01",
        },
        groups=(({"region": "eu"}, D(100)), ({"region": None}, D(5))),
    )
    table = readable(priced).table
    assert table is not None
    assert table.rows == (("region: eu", "100", "0.02", "2.00"), ("region: —", "5", "0.01", "0.05"))


def test_an_unknown_model_shows_its_rows_as_stored():
    shown = breakdown("surge", [{"units": "3", "note": "x"}], "USD", unrounded=None, amount="1")
    assert shown.table is not None
    assert (shown.table.headers, shown.table.rows) == (("Units", "Note"), (("3", "x"),))


def test_a_text_table_aligns_numbers_right():
    table = readable(priced_line(GRADUATED, "250")).table
    assert text_table(table, "  ") == (
        "  From   To  Units  Unit price  Flat fee  Amount",
        "     0  100    100        0.10      5.00   15.00",
        "   100  200    100        0.05      2.00    7.00",
        "   200    ∞     50     0.00125      0.00  0.0625",
    )


def invoice(**changes):
    base = {
        "id": "inv_1",
        "number": None,
        "status": "draft",
        "customer_id": "cust_1",
        "subscription_id": "sub_1",
        "period": {"start": "2026-06-01T00:00:00Z", "end": "2026-07-01T00:00:00Z"},
        "currency": "USD",
        "calculation_id": "calc_1",
        "plan_code": "basic",
        "plan_version": 2,
        "lines": [
            {
                **priced_line(
                    {"metric_key": "api_calls", "model": "per_unit", "unit_price": "0.01"}, "300"
                ),
                "type": "usage",
                "event_count": 300,
                "events_checksum": "sha256:ab",
            },
            {
                **priced_line(
                    {"model": "flat_fee", "name": "Platform fee", "amount": "10"},
                    "0",
                    period_days=30,
                    covered_days=30,
                ),
                "line": 2,
                "type": "usage",
            },
            {
                "line": 3,
                "type": "adjustment",
                "adjustment_id": "adj_1",
                "kind": "late_usage",
                "description": "Late usage, May",
                "original_invoice_id": "inv_0",
                "metric_key": "api_calls",
                "meter_version": 1,
                "quantity": "1500",
                "amount": "15",
            },
        ],
        "subtotal": "28",
        "total": "28",
        "credit_carried": "0",
        "amount_due": "28",
        "checksum": "sha256:cd",
        "due_at": None,
        "issued_at": None,
        "paid_at": None,
        "voided_at": None,
        "void_reason": None,
    }
    return {**base, **changes}


def test_a_draft_document_has_no_number_and_no_dates():
    document = invoice_document(invoice())
    assert (document.number, document.draft, document.status) == ("DRAFT", True, "Draft")
    assert (document.issue_date, document.due_date) == (None, None)
    assert document.period == "1 June 2026 \u2013 30 June 2026"
    assert (document.plan, document.kind, document.replaces) == (
        "basic, version 2",
        "subscription",
        None,
    )
    assert [
        (line.description, line.quantity, line.unit_price, line.amount) for line in document.lines
    ] == [
        ("api_calls", "300", "0.01", "3.00"),
        ("Platform fee", "1", "10.00", "10.00"),
        ("Late usage, May", "1,500", "", "15.00"),
    ]
    assert document.lines[2].detail == "Late usage · invoice inv_0 · api_calls"
    assert (document.subtotal, document.total, document.amount_due, document.credit_carried) == (
        "28.00",
        "28.00",
        "28.00",
        None,
    )
    assert document.events == ((1, "300 events", "sha256:ab"),)


def test_an_issued_document_names_the_invoices_it_refers_to_by_number():
    issued = invoice(
        number="ABX-2026-000007",
        status="payment_failed",
        issued_at="2026-07-02T10:00:00Z",
        due_at="2026-08-01T10:00:00Z",
        replaces="inv_old",
    )
    assert referenced_invoices(issued) == ("inv_old", "inv_0")
    document = invoice_document(issued, {"inv_old": "ABX-2026-000003", "inv_0": "ABX-2026-000001"})
    assert (document.number, document.draft, document.status) == (
        "ABX-2026-000007",
        False,
        "Payment failed",
    )
    assert (document.issue_date, document.due_date) == ("2 July 2026", "1 August 2026")
    assert document.replaces == "ABX-2026-000003"
    assert document.lines[2].detail == "Late usage · invoice ABX-2026-000001 · api_calls"


def test_a_negative_subtotal_carries_credit_and_an_adjustments_invoice_has_no_plan():
    document = invoice_document(
        invoice(
            kind="adjustments",
            subscription_id=None,
            calculation_id=None,
            plan_code=None,
            plan_version=None,
            lines=[],
            subtotal="-12.5",
            total="0",
            credit_carried="12.5",
            amount_due="0",
            currency="JPY",
        )
    )
    assert (document.kind, document.plan, document.calculation_id) == ("adjustments", None, None)
    assert (document.subtotal, document.total, document.credit_carried) == ("-13", "0", "13")
