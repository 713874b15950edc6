"""Validating data against a definition model; failures become one ValidationFailed with
the location of each problem and the most precise stable code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic

from core.domain.errors import FieldError, ValidationFailed
from core.domain.pricing.formula import FormulaError

Model = TypeVar("Model", bound=pydantic.BaseModel)


TEXT_DEPTH_MAX = 32


def _text_problem(text: str, loc: tuple[str | int, ...]) -> FieldError | None:
    if "\x00" in text:
        return FieldError(loc, "contains a NUL character", "invalid_characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return FieldError(loc, "contains a lone surrogate", "invalid_characters")
    return None


def _printable(name: str) -> str:
    """A key as it may appear in an error's location: escaped, never what PostgreSQL or an
    encoder would choke on."""
    return name[:64].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def unstorable_text(data: Any, loc: tuple[str | int, ...] = ()) -> FieldError | None:
    """The first string (key or value) anywhere in `data` that PostgreSQL cannot store as
    text: a NUL character, or a lone surrogate (not UTF-8). None when there is none."""
    if isinstance(data, str):
        return _text_problem(data, loc)
    if len(loc) > TEXT_DEPTH_MAX:
        return FieldError(loc, f"nested deeper than {TEXT_DEPTH_MAX} levels", "too_deep")
    items: Any = (
        ((_printable(str(key)), key, value) for key, value in data.items())
        if isinstance(data, dict)
        else ((index, None, value) for index, value in enumerate(data))
        if isinstance(data, list)
        else ()
    )
    for name, key, value in items:
        found = (None if key is None else unstorable_text(key, (*loc, name))) or unstorable_text(
            value, (*loc, name)
        )
        if found is not None:
            return found
    return None


def validated(model: type[Model], data: Any, *, loc: Sequence[str | int] = ("body",)) -> Model:
    """The one validation boundary of request bodies: text PostgreSQL cannot store is
    refused (422 invalid_characters) before any model sees it, then the model decides."""
    bad = unstorable_text(data, tuple(loc))
    if bad is not None:
        code = "invalid_characters" if bad.type == "invalid_characters" else "validation_error"
        where = ".".join(map(str, bad.loc))
        raise ValidationFailed(f"{bad.msg} (at {where})", code=code, errors=[bad])
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
        if item["loc"] and item["loc"][0] == "contract":
            return "invalid_contract"
        if isinstance(item.get("ctx", {}).get("error"), FormulaError):
            return "invalid_formula"
        if item["type"] == "union_tag_invalid":
            return "unknown_charge_model"
    return "validation_error"
