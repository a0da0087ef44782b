"""The value types and rule helpers params.yaml's sections are declared with (stages/core/params.py):
numbers YAML may give as strings, ranges, and validators whose errors read as one sentence."""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable, Literal

from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, StrictInt, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError


def number(value: Any) -> float:
    # PyYAML reads `1e-4` (no decimal point) as a string; accept it as the number it means.
    try:
        result = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        result = math.nan
    if math.isfinite(result):
        return result
    raise ValueError(f"expected a number, got {value!r}")


def either(ok: Callable[[Any], bool], message: str) -> PlainValidator:
    """One readable error for a union, where pydantic would report one error per member."""
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"{message}, got {value!r}")
        return value
    return PlainValidator(check)


def rule(field: str, message: str, ok: Callable[[Any], bool]) -> Any:
    """A cross-field model_validator whose error names `field` inside the section."""
    def check(section: Any) -> Any:
        if not ok(section):
            raise PydanticCustomError("params", message, {"field": field})
        return section
    return model_validator(mode="after")(check)


Number = Annotated[float, BeforeValidator(number)]
Fraction = Annotated[Number, Field(ge=0, le=1)]    # [0, 1]
Open01 = Annotated[Number, Field(gt=0, lt=1)]      # (0, 1)
Positive = Annotated[Number, Field(gt=0)]
NonNegative = Annotated[Number, Field(ge=0)]
Count = Annotated[StrictInt, Field(ge=1)]
SampleRate = Annotated[StrictInt, Field(ge=8000)]
Device = Literal["auto", "cpu", "cuda"]
# `auto` or a whole number >= 1 (threads, processes).
AutoOrCount = Annotated[int | str, either(lambda v: v == "auto" or (type(v) is int and v >= 1),
                                          "must be auto or an integer >= 1")]
section = dataclass(config=ConfigDict(extra="forbid", frozen=True))
