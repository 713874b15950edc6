"""Metric definitions: what to measure and how to aggregate it. Versions are immutable;
a version is in force on [effective_from, next version's effective_from)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.domain.contracts import Contract
from core.domain.fields import ExactDecimal, Instant, MetricKey, Name, PropertyName, PropertyValue

FILTER_KEYS_MAX = 20
FILTER_VALUES_MAX = 100
GROUP_BY_MAX = 5


class Aggregation(StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    MIN = "min"
    LAST = "last"
    UNIQUE_COUNT = "unique_count"
    PERCENTILE = "percentile"


class MetricVersionDefinition(BaseModel):
    """The body of POST /v1/metrics/{key}/versions (and of a metric without its key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    unit: Annotated[str, Field(min_length=1, max_length=50)] = "unit"
    aggregation: Aggregation
    unique_property: PropertyName | None = None
    percentile: ExactDecimal | None = None
    filters: Annotated[
        dict[
            PropertyName,
            Annotated[list[PropertyValue], Field(min_length=1, max_length=FILTER_VALUES_MAX)],
        ],
        Field(max_length=FILTER_KEYS_MAX),
    ] = Field(default_factory=dict)
    group_by: Annotated[list[PropertyName], Field(max_length=GROUP_BY_MAX)] = Field(
        default_factory=list
    )
    effective_from: Instant
    # API.md §18: who owns the metric, who may produce its events, what they must be.
    contract: Contract | None = None

    @model_validator(mode="after")
    def _aggregation_parameters(self) -> Self:
        if self.aggregation == Aggregation.UNIQUE_COUNT and self.unique_property is None:
            raise ValueError("unique_count needs unique_property")
        if self.aggregation != Aggregation.UNIQUE_COUNT and self.unique_property is not None:
            raise ValueError("unique_property is only for unique_count")
        if self.aggregation == Aggregation.PERCENTILE:
            if self.percentile is None or not 0 < self.percentile <= 100:
                raise ValueError("percentile needs percentile in (0, 100]")
        elif self.percentile is not None:
            raise ValueError("percentile is only for the percentile aggregation")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by names must be distinct")
        return self


class MetricDefinition(MetricVersionDefinition):
    """The body of POST /v1/metrics."""

    key: MetricKey


def effective_to(version_starts: list[datetime], index: int) -> datetime | None:
    """A version ends where the next one starts; the last is open."""
    return version_starts[index + 1] if index + 1 < len(version_starts) else None
