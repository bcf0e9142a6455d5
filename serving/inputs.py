"""Filter values checked against the index's schema before a search runs: a value its field cannot hold (a
word for a `long`, a non-date for a `date`, a number beyond a long or a date, `"NaN"` on a `double`) is the client's
error (422 naming the filter and what its field takes; the value itself is not echoed), not a store fault."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from search.filters import Filter, RangeFilter, TermFilter
from search.schema import FieldType, SchemaError, coerce
from search.stores.base import IndexStore

_TAKES: dict[FieldType, str] = {
    "keyword": "a string",
    "long": "an integer from -2^63 to 2^63-1",
    "double": "a finite number",
    "boolean": "true or false",
    "date": "an ISO 8601 date or epoch milliseconds, years 1 to 9999",
}


def _values(f: Filter) -> list[tuple[str, Any]]:
    if isinstance(f, TermFilter):
        return [("value", f.value)]
    if isinstance(f, RangeFilter):
        return [(k, v) for k, v in (("gte", f.gte), ("gt", f.gt), ("lte", f.lte), ("lt", f.lt)) if v is not None]
    return [("values", v) for v in f.values]


def _check(store: IndexStore, index: str, filters: Sequence[Filter], loc: tuple[str, ...]) -> None:
    schema = store.schema(index)
    errors = []
    for i, f in enumerate(filters):
        try:
            ftype = schema.field_type(f.field)
        except KeyError:
            continue  # the search service names the filterable fields (422)
        for key, value in _values(f):
            try:
                coerce(value, ftype, f.field)
            except (SchemaError, ValueError, TypeError, OverflowError):
                msg = f"not a valid {ftype} for field {f.field!r}: it takes {_TAKES[ftype]}"
                errors.append({"loc": [*loc, "filters", i, key], "msg": msg, "type": "value_error"})
                break  # one error per filter: a terms list of 1,024 bad values is one mistake
    if errors:
        raise RequestValidationError(errors)


async def check_filter_values(
    store: IndexStore, index: str, filters: Sequence[Filter], loc: tuple[str, ...] = ("body",)
) -> None:
    """422 for filter values their fields cannot hold (the schema read may do I/O: in a thread)."""
    if filters:
        await asyncio.to_thread(_check, store, index, filters, loc)
