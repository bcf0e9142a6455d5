"""Structured filters shared by every store, so a query means the same thing on Elasticsearch and embedded.

Values are bounded here, where a request is parsed: numbers that no store field can hold (`1e999` parses as
infinity, `2**70` overflows a long) and huge `terms` lists are the client's error (422), not a store fault.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # Elasticsearch `long`, SQLite INTEGER
MAX_TERMS = 1024
MAX_VALUE_CHARS = 1024


def _bounded(v: Any) -> Any:
    """Reject what a store cannot compare against before the union coerces it (an int too large for a long
    would otherwise become a float)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and not LONG_MIN <= v <= LONG_MAX:
        raise ValueError(f"integer out of range [{LONG_MIN}, {LONG_MAX}]")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("number must be finite")
    if isinstance(v, str) and len(v) > MAX_VALUE_CHARS:
        raise ValueError(f"string longer than {MAX_VALUE_CHARS} characters")
    return v


Scalar = Annotated[str | int | float | bool | datetime, BeforeValidator(_bounded)]


class TermFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["term"] = "term"
    field: str
    value: Scalar


class TermsFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["terms"] = "terms"
    field: str
    values: list[Scalar] = Field(min_length=1, max_length=MAX_TERMS)


class RangeFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["range"] = "range"
    field: str
    gte: Scalar | None = None
    gt: Scalar | None = None
    lte: Scalar | None = None
    lt: Scalar | None = None


Filter = Annotated[TermFilter | TermsFilter | RangeFilter, Field(discriminator="type")]
