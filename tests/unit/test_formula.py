from decimal import Decimal

import pytest

from core.domain.pricing.formula import FormulaError, compile_formula


def _eval(source, quantity="0", days=30):
    return compile_formula(source).evaluate(Decimal(quantity), days)


@pytest.mark.parametrize(
    ("source", "quantity", "expected"),
    [
        # API.md's example: 2,500,000 tokens -> (2.5M - 1M) * 0.000002 + 10 = 13
        ("max(0, quantity - 1000000) * 0.000002 + 10", "2500000", Decimal("13.000000")),
        ("max(0, quantity - 1000000) * 0.000002 + 10", "0", Decimal("10")),
        ("quantity * 0.1", "3", Decimal("0.3")),  # exact: 0.30000000000000004 in float
        (
            "quantity / 3",
            "1",
            Decimal("0." + "3" * 50),
        ),  # 50 significant digits, then rounded once per line
        ("5 if quantity > 100 else 1", "101", Decimal(5)),
        ("5 if quantity > 100 else 1", "100", Decimal(1)),
        ("10 if 0 < quantity <= 10 else 20", "10", Decimal(10)),
        ("ceil(quantity / 1000) * 5", "1001", Decimal(10)),
        ("floor(quantity / 1000) * 5", "1999", Decimal(5)),
        ("round(quantity * 0.125, 2)", "1", Decimal("0.13")),  # half up, not banker's
        ("round(2.5)", "0", Decimal(3)),
        ("abs(-quantity) + min(1, 2, 3)", "4", Decimal(5)),
        ("period_days * 2", "0", Decimal(60)),
        ("+quantity", "7", Decimal(7)),
    ],
)
def test_formulas_evaluate_exactly_in_decimal(source, quantity, expected):
    value = _eval(source, quantity)
    assert isinstance(value, Decimal)
    assert value == expected


@pytest.mark.parametrize(
    ("source", "fragment", "position"),
    [
        ("__import__('os').system('x')", "may be called", 1),
        ("quantity.real", "Attribute is not allowed", 1),
        ("open('x')", "only min max abs ceil floor round", 1),
        ("price * 2", "unknown name 'price'", 1),
        ("quantity ** 99999999", "Pow", 1),
        ("2 ** 2 ** 2 ** 2", "Pow", 1),
        ("quantity // 2", "FloorDiv", 1),
        ("quantity % 2", "Mod", 1),
        ("99999999999999999999 * quantity", "too large", 1),
        ("1e308 * quantity", "plain decimal number", 1),
        ("1_000 * quantity", "plain decimal number", 1),
        ("'abc'", "plain decimal number", 1),
        ("[quantity]", "List is not allowed", 1),
        ("lambda: 1", "Lambda is not allowed", 1),
        ("quantity and 1", "BoolOp is not allowed", 1),
        ("(" * 30 + "1" + ")" * 30, "parentheses", 25),
        ("-" * 40 + "1", "deeper than 24 levels", 26),
        ("quantity +", "syntax error", 1),
        ("1 / quantity", "division by zero", 1),
        ("quantity - 100", "negative", 1),
        ("quantity > 1", "comparison, not an amount", 1),
        ("1 if quantity else 2", "must be a comparison", 6),
        ("round(quantity, 11)", "digits", 17),
        ("min(quantity)", "2 to 20 arguments", 1),
        ("max(*[1, 2])", "positional", 1),
        ("quantity\n+1", "printable ASCII", 9),
        ("", "empty", 1),
        ("quantity + " + "1 + " * 200 + "1", "longer than 500", 501),
    ],
)
def test_unsafe_or_invalid_formulas_are_refused_with_a_position(source, fragment, position):
    with pytest.raises(FormulaError) as caught:
        compile_formula(source)
    assert fragment in caught.value.message
    assert caught.value.position == position


def test_a_result_beyond_numeric_bounds_is_an_error_not_an_overflow():
    formula = compile_formula("quantity * quantity")
    with pytest.raises(FormulaError, match="beyond 10"):
        formula.evaluate(Decimal("9999999999"), 30)
