"""Validating data against a definition model; failures become one ValidationFailed with
the location of each problem and the most precise stable code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic

from core.domain.errors import FieldError, ValidationFailed
from core.domain.pricing.formula import FormulaError

Model = TypeVar("Model", bound=pydantic.BaseModel)


def validated(model: type[Model], data: Any, *, loc: Sequence[str | int] = ("body",)) -> Model:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as error:
        raise from_pydantic(error, loc=loc) from error


def from_pydantic(
    error: pydantic.ValidationError,
    *,
    loc: Sequence[str | int] = ("body",),
    detail: str = "the request is not valid",
    code: str | None = None,
) -> ValidationFailed:
    items = error.errors(include_url=False)
    return ValidationFailed(
        detail,
        code=code or _code(items),
        errors=[FieldError((*loc, *item["loc"]), item["msg"], item["type"]) for item in items],
    )


def _code(items: Sequence[Any]) -> str:
    """A more precise code than validation_error where one error decides it."""
    for item in items:
        if isinstance(item.get("ctx", {}).get("error"), FormulaError):
            return "invalid_formula"
        if item["type"] == "union_tag_invalid":
            return "unknown_charge_model"
    return "validation_error"
