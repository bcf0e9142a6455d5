"""Structured filters shared by every store, so a query means the same thing on Elasticsearch and embedded.

Values are bounded here, where a request is parsed: numbers that no store field can hold (`1e999` parses as
infinity, `2**70` overflows a long), huge `terms` lists and long filter lists are the client's error (422), not a
store fault (1,100 term filters made SQLite's expression tree too deep). What a value means for its field's type
(a word on a `long`, `"NaN"` on a `double`) is checked against the index's schema by `search.schema.coerce`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from search.schema import LONG_MAX, LONG_MIN

MAX_TERMS = 1024
MAX_VALUE_CHARS = 1024
MAX_FIELD_CHARS = 128
MAX_FILTERS = 64  # filters per request
MAX_FILTER_VALUES = 4096  # values across one request's filters (a terms list counts each of its values)


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
    field: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)
    value: Scalar


class TermsFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["terms"] = "terms"
    field: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)
    values: list[Scalar] = Field(min_length=1, max_length=MAX_TERMS)


class RangeFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["range"] = "range"
    field: str = Field(min_length=1, max_length=MAX_FIELD_CHARS)
    gte: Scalar | None = None
    gt: Scalar | None = None
    lte: Scalar | None = None
    lt: Scalar | None = None


Filter = Annotated[TermFilter | TermsFilter | RangeFilter, Field(discriminator="type")]


def filter_values(f: TermFilter | TermsFilter | RangeFilter) -> int:
    """How many values one filter compares against (each becomes a store query parameter)."""
    if isinstance(f, TermsFilter):
        return len(f.values)
    if isinstance(f, RangeFilter):
        return sum(b is not None for b in (f.gte, f.gt, f.lte, f.lt))
    return 1


def _few_values(filters: list[TermFilter | TermsFilter | RangeFilter]) -> list[TermFilter | TermsFilter | RangeFilter]:
    total = sum(filter_values(f) for f in filters)
    if total > MAX_FILTER_VALUES:
        raise ValueError(f"the filters hold {total} values in all; at most {MAX_FILTER_VALUES} are allowed")
    return filters


FilterList = Annotated[list[Filter], Field(max_length=MAX_FILTERS), AfterValidator(_few_values)]
"""A request's filters: at most `MAX_FILTERS` of them, holding at most `MAX_FILTER_VALUES` values together."""
