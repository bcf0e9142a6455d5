"""The SQLite side of `EmbeddedStore`: the tables of a version file, the FTS5 text, and filters as SQL.

Kept apart from the store so the schema a version file is created with, and how a filter maps onto the JSON of
filterable values, can be read in one place (the same checks the Elasticsearch mapping makes).

The FTS5 table holds each document's `search.text.bm25_terms` (Snowball stems, stop words out), analysed in
Python, so that both stores and the bm25s reference score the same terms; FTS5 only splits them on spaces. Files
written before that (no `bm25` key in `meta`) hold the raw title and body under FTS5's Porter tokenizer, and are
still read and written that way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from search.documents import Document, bm25_text
from search.filters import Filter, RangeFilter, TermFilter, TermsFilter
from search.schema import BUILTIN_FIELDS, IndexSchema, coerce
from search.text import bm25_terms

# Stems are whole tokens: `_` (a word character in Python) must not split them.
TOKENIZER = "unicode61 remove_diacritics 2 tokenchars ''_''"
LEGACY_TOKENIZER = "porter unicode61 remove_diacritics 2"  # files without `meta.bm25`: raw text, Porter stems
BM25_META = ("bm25", "stems")  # the `meta` row that says the FTS5 table holds `bm25_terms`

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


def fts_content(doc: Document, stems: bool = True) -> str:
    """What the FTS5 table holds for a document: its BM25 terms, or (a legacy file) the raw title and body."""
    text = bm25_text(doc)
    return " ".join(bm25_terms(text)) if stems else text


def fts_match(terms: Sequence[str]) -> str:
    """An FTS5 query that ORs the terms, one phrase per occurrence: FTS5's bm25() sums over the query's phrases,
    so a repeated term counts as often as it is repeated."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


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
