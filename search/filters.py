"""Structured filters shared by every store, so a query means the same thing on Elasticsearch and embedded."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool | datetime


class TermFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["term"] = "term"
    field: str
    value: Scalar


class TermsFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["terms"] = "terms"
    field: str
    values: list[Scalar] = Field(min_length=1)


class RangeFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["range"] = "range"
    field: str
    gte: Scalar | None = None
    gt: Scalar | None = None
    lte: Scalar | None = None
    lt: Scalar | None = None


Filter = Annotated[TermFilter | TermsFilter | RangeFilter, Field(discriminator="type")]
