"""The embedded store's side of pseudo-relevance feedback (`search.feedback`): term statistics of documents, BM25
with a weight per term, and documents' vectors.

FTS5's MATCH has no per-term boost, but its bm25() over a one-term query is exactly that term's share of a
multi-term query's score (bm25() sums over phrases). So a weighted query is one SQL statement: a `UNION ALL` of
one-term matches, each scaled by its weight, summed per document. Term counts come from the FTS5 table's own
text (the same `bm25_terms` the index scores), document frequencies from an `fts5vocab` view in the
connection's temp schema. Files written before stems (raw text under Porter) give no statistics, so RM3 is
skipped there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from search.documents import Hit
from search.feedback import TermStats
from search.filters import Filter
from search.stores.embedded_sql import filter_sql

if TYPE_CHECKING:
    from search.schema import IndexSchema
    from search.stores.embedded_versions import VersionFile

_VOCAB_SQL = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_vocab USING fts5vocab(main, 'fts', 'row')"


class EmbeddedFeedback:
    """Mixed into `EmbeddedStore` (which provides `_open` and `schema`)."""

    _open: Callable[[str], VersionFile]  # provided by EmbeddedStore
    schema: Callable[[str], IndexSchema]

    def term_stats(self, target: str, ids: Sequence[str]) -> TermStats:
        v = self._open(target)
        ids = list(dict.fromkeys(ids))
        if not ids or not v.stems():
            return TermStats(docs={}, df={}, n_docs=0)
        c = v.conn()
        marks = ",".join("?" * len(ids))
        rows = c.execute(
            f"SELECT d.id, f.content FROM docs d JOIN fts f ON f.rowid = d.rid WHERE d.id IN ({marks})", ids
        ).fetchall()
        docs = {doc_id: dict(Counter(str(text).split())) for doc_id, text in rows}
        terms = sorted({t for counts in docs.values() for t in counts})
        c.execute(_VOCAB_SQL)
        df: dict[str, int] = {}
        for i in range(0, len(terms), 500):
            part = terms[i : i + 500]
            q = f"SELECT term, doc FROM temp.fts_vocab WHERE term IN ({','.join('?' * len(part))})"
            df.update({str(t): int(n) for t, n in c.execute(q, part).fetchall()})
        n_docs = int(c.execute("SELECT count(*) FROM docs").fetchone()[0])
        return TermStats(docs=docs, df=df, n_docs=n_docs)

    def bm25_weighted_search(
        self, target: str, weights: Mapping[str, float], k: int, filters: Sequence[Filter] = ()
    ) -> list[Hit]:
        """Top `k` by sum over terms of weight × the term's BM25 (ids and scores; no documents)."""
        terms = [(t, w) for t, w in weights.items() if w > 0 and t.strip()]
        if not terms or k <= 0:
            return []
        v = self._open(target)
        parts = " UNION ALL ".join(["SELECT rowid AS rid, -bm25(fts) * ? AS s FROM fts WHERE fts MATCH ?"] * len(terms))
        params: list[Any] = []
        for t, w in terms:
            params.extend([float(w), '"' + t.replace('"', '""') + '"'])
        where, fparams = filter_sql(filters, self.schema(target)) if filters else ("", [])
        # MATERIALIZED: a flattened subquery would call bm25() outside its MATCH (which SQLite refuses).
        sql = (
            f"WITH s(rid, s) AS MATERIALIZED ({parts}) "
            f"SELECT d.id, SUM(s.s) AS total FROM s JOIN docs d ON d.rid = s.rid "
            f"{'WHERE ' + where if where else ''} GROUP BY s.rid ORDER BY total DESC, s.rid LIMIT ?"
        )
        rows = v.conn().execute(sql, [*params, *fparams, k]).fetchall()
        return [Hit(id=r[0], score=float(r[1])) for r in rows]

    def doc_vectors(self, target: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Each document's chunk vectors averaged, unit length (documents without vectors are left out)."""
        v = self._open(target)
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        mat, rids = v.matrix()
        if len(rids) == 0:
            return {}
        marks = ",".join("?" * len(ids))
        by_rid = dict(v.conn().execute(f"SELECT rid, id FROM docs WHERE id IN ({marks})", ids).fetchall())
        out: dict[str, np.ndarray] = {}
        for rid, doc_id in by_rid.items():
            rows = mat[rids == rid]
            if len(rows) == 0:
                continue
            mean = rows.mean(axis=0)
            n = float(np.linalg.norm(mean))
            if n > 0:
                out[str(doc_id)] = (mean / n).astype(np.float32)
        return out
