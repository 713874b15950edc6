"""custom_formula: the plan's safe Decimal expression over `quantity` and `period_days`."""

from __future__ import annotations

from core.domain.pricing import formula
from core.domain.pricing.charges import CustomFormula
from core.domain.pricing.priced import Priced, PricingError, Usage, billable


def price(charge: CustomFormula, usage: Usage) -> Priced:
    quantity = billable(usage.quantity)
    try:
        amount = formula.compile_formula(charge.formula).evaluate(quantity, usage.period_days)
    except formula.FormulaError as error:
        raise PricingError(f"formula of charge {charge.label!r}: {error}") from error
    row = {
        "formula": charge.formula,
        "quantity": quantity,
        "period_days": usage.period_days,
        "amount": amount,
    }
    return Priced(amount, [row])
