"""Index schema: which extra fields are filterable and with what type.

Both stores enforce the same schema, so a document that one store rejects the other rejects too.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldType = Literal["keyword", "long", "double", "boolean", "date"]

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # Elasticsearch `long`, SQLite INTEGER
DATE_MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
DATE_MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)

# Built-in filterable fields every index has.
BUILTIN_FIELDS: dict[str, FieldType] = {"published_at": "date", "updated_at": "date", "url": "keyword"}


MAX_FACET_RANGES = 50  # ranges per facet (a request's or a schema's)


class SchemaError(ValueError):
    """A value does not fit the declared type of its field."""


class FacetRange(BaseModel):
    """One bucket of a numeric or date facet: `gte` <= value < `lt` (either side may be open)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=100, description="The bucket's name in the response's `facets`.")
    gte: int | float | str | None = Field(default=None, description="Lower bound, inclusive: a number, or a date.")
    lt: int | float | str | None = Field(default=None, description="Upper bound, exclusive: a number, or a date.")


FacetRanges = Annotated[list[FacetRange], Field(min_length=1, max_length=MAX_FACET_RANGES)]


class IndexSchema(BaseModel):
    """Declared filterable fields (`Document.fields` keys) and their types."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, FieldType] = Field(
        default_factory=dict, description="Filterable extra fields: name -> keyword|long|double|boolean|date."
    )
    facet_ranges: dict[str, FacetRanges] = Field(
        default_factory=dict,
        description="Buckets of numeric/date facets (field -> ranges), used when a search asks for the facet "
        "without ranges of its own.",
    )

    @model_validator(mode="after")
    def _ranges_fit(self) -> IndexSchema:
        for name, ranges in self.facet_ranges.items():
            ftype = BUILTIN_FIELDS.get(name) or self.fields.get(name)
            if ftype not in ("long", "double", "date"):
                raise ValueError(f"facet_ranges: {name!r} is not a declared long, double or date field")
            if len({r.key for r in ranges}) < len(ranges):
                raise ValueError(f"facet_ranges: {name!r} names a range key twice")
            for bound in (b for r in ranges for b in (r.gte, r.lt)):
                facet_bound(bound, ftype, name)
        return self

    def field_type(self, name: str) -> FieldType:
        """Type of a filterable field; raises KeyError naming the known fields for an unknown one."""
        if name in BUILTIN_FIELDS:
            return BUILTIN_FIELDS[name]
        if name in self.fields:
            return self.fields[name]
        known = sorted({*BUILTIN_FIELDS, *self.fields})
        raise KeyError(f"unknown filter field {name!r}; filterable fields: {', '.join(known)}")


def facet_bound(value: Any, ftype: FieldType, field: str) -> float | None:
    """A range bound as both stores compare it: a double for numeric fields (so `gte: 2.5` on a long means 3 and
    up, not 2), epoch milliseconds for dates. Raises SchemaError."""
    if value is None:
        return None
    return float(coerce(value, "date" if ftype == "date" else "double", field))


def to_epoch_millis(value: Any) -> int:
    """Dates as Elasticsearch keeps them: epoch milliseconds, naive times taken as UTC. Numbers must be finite and
    within years 1 to 9999 (what a datetime can hold), so both stores can compare them (1e300 overflowed SQLite)."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a date")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a date must be a finite number")
        if not DATE_MIN_MS <= value <= DATE_MAX_MS:
            raise ValueError("epoch milliseconds out of range (years 1 to 9999)")
        return int(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _long(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise SchemaError(f"field {field!r}: expected a long, got a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"field {field!r}: a long must be a finite number")
    out = int(value)  # ES truncates decimals for long fields; int("nan") and int("1e5") raise ValueError
    if not LONG_MIN <= out <= LONG_MAX:
        raise SchemaError(f"field {field!r}: out of the range of a long (-2^63 to 2^63-1)")
    return out


def _double(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise SchemaError(f"field {field!r}: expected a double, got a boolean")
    out = float(value)
    if not math.isfinite(out):  # "NaN", "inf", "-Infinity", "1e999": no store orders them as numbers
        raise SchemaError(f"field {field!r}: a double must be a finite number")
    return out


def coerce(value: Any, ftype: FieldType, field: str) -> Any:
    """Validate and normalise one value as Elasticsearch would map it (raises SchemaError)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [coerce(v, ftype, field) for v in value]
    try:
        if ftype == "keyword":
            if isinstance(value, (dict, list)):
                raise SchemaError(f"field {field!r}: expected a keyword, got an object")
            return str(value)
        if ftype == "long":
            return _long(value, field)
        if ftype == "double":
            return _double(value, field)
        if ftype == "boolean":
            if isinstance(value, bool):
                return value
            if value in ("true", "false"):
                return value == "true"
            raise SchemaError(f"field {field!r}: expected a boolean, got {value!r}")
        if ftype == "date":
            return to_epoch_millis(value)
    except SchemaError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise SchemaError(f"field {field!r}: cannot parse {value!r} as {ftype}: {exc}") from exc
    raise SchemaError(f"field {field!r}: unknown type {ftype}")
