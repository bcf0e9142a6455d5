"""The SQLite side of `EmbeddedStore`: the tables of a version file, the FTS5 text, and filters as SQL.

Kept apart from the store so the schema a version file is created with, and how a filter maps onto the JSON of
filterable values, can be read in one place (the same checks the Elasticsearch mapping makes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from search.documents import Document
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import BUILTIN_FIELDS, IndexSchema, coerce

TOKENIZER = "porter unicode61 remove_diacritics 2"

SCHEMA_SQL = f"""
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE docs (
                    rid INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    doc TEXT NOT NULL,
                    filt TEXT NOT NULL,
                    content_hash TEXT NOT NULL
                );
                CREATE TABLE vecs (rid INTEGER NOT NULL, chunk INTEGER NOT NULL, v BLOB NOT NULL,
                                   PRIMARY KEY (rid, chunk));
                CREATE VIRTUAL TABLE fts USING fts5(content, tokenize='{TOKENIZER}');
                """


def fts_content(doc: Document) -> str:
    return f"{doc.title}\n{doc.body}"


def filter_values(doc: Document, schema: IndexSchema) -> dict[str, Any]:
    """Typed, coerced values of every filterable field (the same checks Elasticsearch's mapping makes)."""
    out: dict[str, Any] = {}
    for name, ftype in BUILTIN_FIELDS.items():
        val = getattr(doc, name)
        if val is not None:
            out[name] = coerce(val, ftype, name)
    for name, ftype in schema.fields.items():
        if name in doc.fields and doc.fields[name] is not None:
            out[name] = coerce(doc.fields[name], ftype, name)
    return out


_SAFE_FIELD = re.compile(r"^[A-Za-z0-9_.\-]+$")


def filter_sql(filters: Sequence[Filter], schema: IndexSchema) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for f in filters:
        ftype = schema.field_type(f.field)  # KeyError for unknown fields
        if not _SAFE_FIELD.match(f.field):
            raise KeyError(f"invalid field name {f.field!r}")
        src = f"json_each(d.filt, '$.\"{f.field}\"')"
        if isinstance(f, TermFilter):
            clauses.append(f"EXISTS (SELECT 1 FROM {src} WHERE value = ?)")
            params.append(_sql_value(coerce(f.value, ftype, f.field)))
        elif isinstance(f, TermsFilter):
            vals = [_sql_value(coerce(x, ftype, f.field)) for x in f.values]
            clauses.append(f"EXISTS (SELECT 1 FROM {src} WHERE value IN ({','.join('?' * len(vals))}))")
            params.extend(vals)
        elif isinstance(f, RangeFilter):
            conds = []
            for op, bound in ((">=", f.gte), (">", f.gt), ("<=", f.lte), ("<", f.lt)):
                if bound is not None:
                    conds.append(f"value {op} ?")
                    params.append(_sql_value(coerce(bound, ftype, f.field)))
            if conds:
                clauses.append(f"EXISTS (SELECT 1 FROM {src} WHERE {' AND '.join(conds)})")
    return " AND ".join(clauses), params


def _sql_value(v: Any) -> Any:
    return int(v) if isinstance(v, bool) else v
