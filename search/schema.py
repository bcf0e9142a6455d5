"""Index schema: which extra fields are filterable and with what type.

Both stores enforce the same schema, so a document that one store rejects the other rejects too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FieldType = Literal["keyword", "long", "double", "boolean", "date"]

# Built-in filterable fields every index has.
BUILTIN_FIELDS: dict[str, FieldType] = {"published_at": "date", "updated_at": "date", "url": "keyword"}


class SchemaError(ValueError):
    """A value does not fit the declared type of its field."""


class IndexSchema(BaseModel):
    """Declared filterable fields (`Document.fields` keys) and their types."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, FieldType] = Field(
        default_factory=dict, description="Filterable extra fields: name -> keyword|long|double|boolean|date."
    )

    def field_type(self, name: str) -> FieldType:
        """Type of a filterable field; raises KeyError naming the known fields for an unknown one."""
        if name in BUILTIN_FIELDS:
            return BUILTIN_FIELDS[name]
        if name in self.fields:
            return self.fields[name]
        known = sorted({*BUILTIN_FIELDS, *self.fields})
        raise KeyError(f"unknown filter field {name!r}; filterable fields: {', '.join(known)}")


def to_epoch_millis(value: Any) -> int:
    """Dates as Elasticsearch keeps them: epoch milliseconds, naive times taken as UTC."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a date")
    if isinstance(value, (int, float)):
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
            if isinstance(value, bool):
                raise SchemaError(f"field {field!r}: expected a long, got a boolean")
            if isinstance(value, float) and not value.is_integer():
                return int(value)  # ES truncates decimals for long fields
            return int(value)
        if ftype == "double":
            if isinstance(value, bool):
                raise SchemaError(f"field {field!r}: expected a double, got a boolean")
            return float(value)
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
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"field {field!r}: cannot parse {value!r} as {ftype}: {exc}") from exc
    raise SchemaError(f"field {field!r}: unknown type {ftype}")
