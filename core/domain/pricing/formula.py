"""The custom_formula language: a safe arithmetic expression over `quantity` and
`period_days`, evaluated only in Decimal.

Grammar (Python expression syntax, restricted to an explicit whitelist):
    numbers       123, 0.000002      (no exponents, no underscores)
    names         quantity, period_days
    arithmetic    + - * /  and unary -, +           (no **, no //, no %)
    comparisons   < <= > >= == !=                  (chains allowed: 0 < quantity <= 10)
    conditional   x if condition else y
    functions     min(a, b, ...) max(a, b, ...) abs(x) ceil(x) floor(x) round(x) round(x, n)

Parsing uses Python's `ast` module purely as a parser: nothing is ever compiled or
evaluated by Python. Every node is checked against the whitelist, literals are read from
the source text (never through float), sizes are bounded, and the formula is trial-run at
creation so that division by zero or a negative amount at ordinary quantities is refused
before anyone is billed. `round` rounds half up; `ceil`/`floor` go to whole numbers.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)

FORMULA_CHARS_MAX = 500
DEPTH_MAX = 24
NODES_MAX = 200
LITERAL_MAX = Decimal(10) ** 12
RESULT_MAX = Decimal(10) ** 10
ROUND_DIGITS_MAX = 10
VARIABLES = frozenset({"quantity", "period_days"})
NUMBER_TEXT = re.compile(r"^\d+(\.\d+)?$")
# Trial points: ordinary usage must price without error and never negative.
TRIAL_QUANTITIES = (Decimal(0), Decimal(1), Decimal(1000))
TRIAL_PERIOD_DAYS = (1, 28, 31, 366)
# Wide enough for NUMERIC(20,10) products, bounded so no value can explode.
ARITHMETIC = Context(prec=50, Emax=60, Emin=-60, traps=[InvalidOperation, DivisionByZero, Overflow])

_BINARY: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Decimal, Decimal], bool]] = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}
# name -> (fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[int, int]] = {
    "min": (2, 20),
    "max": (2, 20),
    "abs": (1, 1),
    "ceil": (1, 1),
    "floor": (1, 1),
    "round": (1, 2),
}


class FormulaError(ValueError):
    """An invalid or unsafe formula; `position` is the 1-based column of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Formula:
    source: str
    _tree: ast.expr
    _literals: dict[int, Decimal]

    def evaluate(self, quantity: Decimal, period_days: int) -> Decimal:
        variables = {"quantity": quantity, "period_days": Decimal(period_days)}
        with localcontext(ARITHMETIC):
            try:
                value = _Evaluator(self, variables).value(self._tree)
            except (DivisionByZero, InvalidOperation) as error:
                raise FormulaError("division by zero or an undefined operation", 1) from error
            except Overflow as error:
                raise FormulaError("a value grew beyond the allowed magnitude", 1) from error
        if isinstance(value, bool):
            raise FormulaError("the formula gives a comparison, not an amount", 1)
        if abs(value) >= RESULT_MAX:
            raise FormulaError(f"the amount {value} is beyond 10^10", 1)
        return value


def _position(node: ast.AST) -> int:
    return int(getattr(node, "col_offset", 0)) + 1


def _precheck(source: str) -> None:
    if not source.strip():
        raise FormulaError("the formula is empty", 1)
    if len(source) > FORMULA_CHARS_MAX:
        raise FormulaError(f"longer than {FORMULA_CHARS_MAX} characters", FORMULA_CHARS_MAX + 1)
    depth = 0
    for column, character in enumerate(source, start=1):
        if not (" " <= character <= "~"):
            raise FormulaError("only printable ASCII characters are allowed", column)
        if character in "\\;":
            raise FormulaError(f"{character!r} is not allowed", column)
        depth += {"(": 1, ")": -1}.get(character, 0)
        if depth > DEPTH_MAX:
            raise FormulaError(f"nested deeper than {DEPTH_MAX} parentheses", column)


def compile_formula(source: str) -> Formula:
    """Parse, check and trial-run a formula; FormulaError says what and where."""
    _precheck(source)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise FormulaError(f"syntax error: {error.msg}", error.offset or 1) from error
    literals: dict[int, Decimal] = {}
    _check(tree.body, source, literals, depth=0, count=[0])
    formula = Formula(source, tree.body, literals)
    for quantity in TRIAL_QUANTITIES:
        for days in TRIAL_PERIOD_DAYS:
            try:
                amount = formula.evaluate(quantity, days)
            except FormulaError as error:
                raise FormulaError(
                    f"{error.message} at quantity={quantity}, period_days={days}", error.position
                ) from error
            if amount < 0:
                raise FormulaError(
                    f"the amount is negative ({amount}) at quantity={quantity}, "
                    f"period_days={days}; use max(0, ...)",
                    1,
                )
    return formula


def _check(
    node: ast.AST, source: str, literals: dict[int, Decimal], *, depth: int, count: list[int]
) -> None:
    count[0] += 1
    if count[0] > NODES_MAX:
        raise FormulaError(f"more than {NODES_MAX} elements", _position(node))
    if depth > DEPTH_MAX:
        raise FormulaError(f"nested deeper than {DEPTH_MAX} levels", _position(node))
    if isinstance(node, ast.Constant):
        literals[id(node)] = _literal(node, source)
        return
    if isinstance(node, ast.Name):
        if node.id not in VARIABLES:
            raise FormulaError(
                f"unknown name {node.id!r}; only quantity and period_days", _position(node)
            )
        return
    for child in _children(node):
        _check(child, source, literals, depth=depth + 1, count=count)


def _children(node: ast.AST) -> list[ast.AST]:
    """The operands of an allowed operation; anything else is refused."""
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            name = type(node.op).__name__
            raise FormulaError(f"operator {name} is not allowed (+ - * / only)", _position(node))
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub | ast.UAdd):
            raise FormulaError(f"operator {type(node.op).__name__} is not allowed", _position(node))
        return [node.operand]
    if isinstance(node, ast.Compare):
        if any(type(op) not in _COMPARE for op in node.ops):
            raise FormulaError("only < <= > >= == != comparisons are allowed", _position(node))
        return [node.left, *node.comparators]
    if isinstance(node, ast.IfExp):
        return [node.test, node.body, node.orelse]
    if isinstance(node, ast.Call):
        return _check_call(node)
    raise FormulaError(f"{type(node).__name__} is not allowed in a formula", _position(node))


def _check_call(node: ast.Call) -> list[ast.AST]:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        raise FormulaError("only min max abs ceil floor round may be called", _position(node))
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise FormulaError("functions take plain positional arguments", _position(node))
    fewest, most = _FUNCTIONS[node.func.id]
    if not fewest <= len(node.args) <= most:
        raise FormulaError(f"{node.func.id} takes {fewest} to {most} arguments", _position(node))
    if node.func.id == "round" and len(node.args) == 2:
        digits = node.args[1]
        if not (
            isinstance(digits, ast.Constant)
            and type(digits.value) is int
            and 0 <= digits.value <= ROUND_DIGITS_MAX
        ):
            raise FormulaError(
                f"round's digits must be a whole number 0..{ROUND_DIGITS_MAX}", _position(digits)
            )
    return list(node.args)


def _literal(node: ast.Constant, source: str) -> Decimal:
    text = ast.get_source_segment(source, node) or ""
    if type(node.value) not in (int, float) or not NUMBER_TEXT.match(text):
        raise FormulaError(
            f"{text or repr(node.value)!r} is not a plain decimal number", _position(node)
        )
    value = Decimal(text)  # from the source text: exact, never through float
    if value >= LITERAL_MAX:
        raise FormulaError(f"number {text} is too large (limit 10^12)", _position(node))
    return value


class _Evaluator:
    def __init__(self, formula: Formula, variables: dict[str, Decimal]) -> None:
        self.literals = formula._literals
        self.variables = variables

    def number(self, node: ast.AST) -> Decimal:
        value = self.value(node)
        if isinstance(value, bool):
            raise FormulaError("a comparison cannot be used as a number", _position(node))
        return value

    def value(self, node: ast.AST) -> Decimal | bool:  # noqa: PLR0911 - one branch per node type
        if isinstance(node, ast.Constant):
            return self.literals[id(node)]
        if isinstance(node, ast.Name):
            return self.variables[node.id]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self.number(node.left), self.number(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self.number(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Compare):
            left = self.number(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.number(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            test = self.value(node.test)
            if not isinstance(test, bool):
                raise FormulaError(
                    "the condition of `if` must be a comparison", _position(node.test)
                )
            return self.value(node.body if test else node.orelse)
        assert isinstance(node, ast.Call)
        assert isinstance(node.func, ast.Name)
        return self.call(node.func.id, node)

    def call(self, name: str, node: ast.Call) -> Decimal:
        args = [self.number(a) for a in node.args]
        if name == "min":
            return min(args)
        if name == "max":
            return max(args)
        if name == "abs":
            return abs(args[0])
        if name == "ceil":
            return args[0].to_integral_value(rounding=ROUND_CEILING)
        if name == "floor":
            return args[0].to_integral_value(rounding=ROUND_FLOOR)
        digits = int(args[1]) if len(args) == 2 else 0
        return args[0].quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
