"""The embedded store's synonyms: the sets on file, and BM25 with synonym clauses in one SQL statement.

Sets: one JSON file per index alias, `<data_dir>/synonyms/<alias>.json`, replaced with `os.replace` after an
fsync (atomic on POSIX) under an `flock` guard, so concurrent writers never lose a version and readers never see
half a file. Reads are memoised by the file's stat: a search costs one `stat`, and a change written by any
process (another replica, the CLI) is seen by the next search.

Search: FTS5's bm25() over a query is the sum of its phrases' shares (`embedded_feedback`), so the query's own
terms and its one-word synonyms are one MATCH (scored exactly as `bm25_search` scores them, with FTS5's own
ranking), and each multi-word clause adds its words' shares, times its weight, for the rows that hold it as a
phrase (its stems adjacent).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.documents import Hit
from search.filters import Filter
from search.naming import validate_index_name, version_alias
from search.stores.embedded_locks import guard
from search.stores.embedded_sql import filter_sql, fts_match
from search.synonyms import StoredSynonyms, SynonymClause, SynonymQuery, SynonymSets

if TYPE_CHECKING:
    from search.schema import IndexSchema
    from search.stores.embedded_versions import VersionFile


def _phrase(stems: Sequence[str]) -> str:
    return '"' + " ".join(stems).replace('"', '""') + '"'


class EmbeddedSynonymSearch:
    """Mixed into `EmbeddedStore` (which provides `_open`, `schema` and `bm25_search`)."""

    _open: Callable[[str], VersionFile]
    schema: Callable[[str], IndexSchema]
    bm25_search: Callable[..., list[Hit]]

    def bm25_synonym_search(
        self, target: str, query: SynonymQuery, k: int, filters: Sequence[Filter] = ()
    ) -> list[Hit]:
        """Top `k` (ids and scores) by the query's own BM25 plus its synonym clauses'; a file written before
        stems (no `bm25_terms` in its FTS5 table) gets plain BM25 without synonyms."""
        v = self._open(target)
        if not v.stems():
            return self.bm25_search(target, " ".join(query.terms), k, filters, with_docs=False)
        if k <= 0 or not (query.terms or query.clauses):
            return []
        # One-word synonyms of weight 1 join the query's own MATCH (bm25() sums its phrases' shares): the same
        # scores, and FTS5's own ranking when nothing else is left (no temporary table, no GROUP BY).
        plain = [c.stems[0] for c in query.clauses if len(c.stems) == 1 and c.weight == 1.0]
        rest = [c for c in query.clauses if not (len(c.stems) == 1 and c.weight == 1.0)]
        main = [*query.terms, *plain]
        where, fparams = filter_sql(filters, self.schema(target)) if filters else ("", [])
        c = v.conn()
        if not rest:
            if not where:
                top = c.execute(
                    "SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank, rowid LIMIT ?", [fts_match(main), k]
                ).fetchall()
                marks = ",".join("?" * len(top))
                ids = dict(
                    c.execute(f"SELECT rid, id FROM docs WHERE rid IN ({marks})", [r[0] for r in top]).fetchall()
                )
                return [Hit(id=ids[rid], score=-float(rank)) for rid, rank in top if rid in ids]
            sql = (
                "SELECT d.id, -bm25(fts) AS s FROM fts JOIN docs d ON d.rid = fts.rowid "
                f"WHERE fts MATCH ? AND {where} ORDER BY s DESC, fts.rowid LIMIT ?"
            )
            return [Hit(id=r[0], score=float(r[1])) for r in c.execute(sql, [fts_match(main), *fparams, k]).fetchall()]
        if all(len(cl.stems) > 1 for cl in rest):
            merged = _phrase_merge(c, main, rest, k, where, fparams)
            if merged is not None:
                return merged
        parts: list[str] = []
        params: list[Any] = []
        ctes: list[str] = []
        cte_params: list[Any] = []
        if main:
            parts.append("SELECT rowid AS rid, -bm25(fts) AS s FROM fts WHERE fts MATCH ?")
            params.append(fts_match(main))
        for i, clause in enumerate(rest):
            only = ""
            if len(clause.stems) > 1:  # a phrase: its rows first, then its words' shares within them
                ctes.append(f"p{i}(rid) AS MATERIALIZED (SELECT rowid FROM fts WHERE fts MATCH ?)")
                cte_params.append(_phrase(clause.stems))
                only = f" AND rowid IN (SELECT rid FROM p{i})"
            parts.append(f"SELECT rowid AS rid, -bm25(fts) * ? AS s FROM fts WHERE fts MATCH ?{only}")
            params.extend([float(clause.weight), fts_match(clause.stems)])
        # MATERIALIZED: a flattened subquery would call bm25() outside its MATCH (which SQLite refuses).
        ctes.append(f"s(rid, s) AS MATERIALIZED ({' UNION ALL '.join(parts)})")
        sql = (
            f"WITH {', '.join(ctes)} "
            f"SELECT d.id, SUM(s.s) AS total FROM s JOIN docs d ON d.rid = s.rid "
            f"{'WHERE ' + where if where else ''} GROUP BY s.rid ORDER BY total DESC, s.rid LIMIT ?"
        )
        rows = c.execute(sql, [*cte_params, *params, *fparams, k]).fetchall()
        return [Hit(id=r[0], score=float(r[1])) for r in rows]


MAX_PHRASE_ROWS = 5000  # past this many rows holding the phrases, one UNION ALL statement is the cheaper plan


def _phrase_merge(
    c: sqlite3.Connection,
    main: Sequence[str],
    phrases: Sequence[SynonymClause],
    k: int,
    where: str,
    fparams: Sequence[Any],
) -> list[Hit] | None:
    """Top `k` when every clause left is a phrase: the phrases' rows (few, as a rule) are scored in full, every
    other row scores its main MATCH alone, so the main query's top `k` + |rows| by FTS5's own ranking holds the
    rest of the answer, and no temporary table of every row the query's words match is built. None: too many
    phrase rows (the caller's single statement then)."""
    extra: dict[int, float] = {}
    for cl in phrases:
        sql = (
            "WITH p(rid) AS MATERIALIZED (SELECT rowid FROM fts WHERE fts MATCH ?) "
            "SELECT rowid, -bm25(fts) FROM fts WHERE fts MATCH ? AND rowid IN (SELECT rid FROM p)"
        )
        for rid, score in c.execute(sql, [_phrase(cl.stems), fts_match(cl.stems)]).fetchall():
            extra[rid] = extra.get(rid, 0.0) + float(cl.weight) * float(score)
        if len(extra) > MAX_PHRASE_ROWS:
            return None
    if extra and where:
        marks = ",".join("?" * len(extra))
        allowed = {
            r
            for (r,) in c.execute(f"SELECT d.rid FROM docs d WHERE d.rid IN ({marks}) AND {where}", [*extra, *fparams])
        }
        extra = {r: s for r, s in extra.items() if r in allowed}
    scores: dict[int, float] = {}
    if main:
        m, n = fts_match(main), k + len(extra)
        if where:
            sql = (
                "SELECT fts.rowid, -bm25(fts) AS s FROM fts JOIN docs d ON d.rid = fts.rowid "
                f"WHERE fts MATCH ? AND {where} ORDER BY s DESC, fts.rowid LIMIT ?"
            )
            scores = {int(r): float(s) for r, s in c.execute(sql, [m, *fparams, n]).fetchall()}
        else:
            sql = "SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank, rowid LIMIT ?"
            scores = {int(r): -float(s) for r, s in c.execute(sql, [m, n]).fetchall()}
        if extra:  # the phrase rows' own MATCH share (zero where the query's words are absent)
            marks = ",".join("?" * len(extra))
            sql = f"SELECT rowid, -bm25(fts) FROM fts WHERE fts MATCH ? AND rowid IN ({marks})"
            scores.update({int(r): float(s) for r, s in c.execute(sql, [m, *extra]).fetchall()})
    for rid, s in extra.items():
        scores[rid] = scores.get(rid, 0.0) + s
    best = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]
    if not best:
        return []
    marks = ",".join("?" * len(best))
    ids = dict(c.execute(f"SELECT rid, id FROM docs WHERE rid IN ({marks})", [r for r, _ in best]).fetchall())
    return [Hit(id=ids[r], score=s) for r, s in best if r in ids]


class EmbeddedSynonymStore:
    """`SynonymStore` over files under the embedded store's data dir."""

    def __init__(self, data_dir: Path | str) -> None:
        self.dir = Path(data_dir) / "synonyms"
        self._memo: dict[str, tuple[tuple[int, int, int], StoredSynonyms]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(index: str) -> str:
        return validate_index_name(version_alias(index) or index)

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, index: str) -> StoredSynonyms:
        key = self._key(index)
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return StoredSynonyms(index=key, version=0)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            memo = self._memo.get(key)
        if memo is not None and memo[0] == stamp:
            return memo[1]
        stored = StoredSynonyms.model_validate_json(path.read_bytes())
        with self._lock:
            self._memo[key] = (stamp, stored)
        return stored

    def _write(self, key: str, stored: StoredSynonyms) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(stored.model_dump(mode="json")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def put(self, index: str, sets: SynonymSets) -> StoredSynonyms:
        key = self._key(index)
        self.dir.mkdir(parents=True, exist_ok=True)
        with guard(self.dir, f".{key}"):  # read-increment-write is atomic between processes
            before = self.get(key)
            stored = StoredSynonyms(
                index=key, version=before.version + 1, sets=sets.sets, updated=datetime.now(UTC).isoformat()
            )
            self._write(key, stored)
        return stored

    def delete(self, index: str) -> bool:
        """Clears the sets, keeping the file and its counter (a later put must not reuse a version a cache
        has seen with other sets)."""
        existed = bool(self.get(index).sets)
        if existed:
            self.put(index, SynonymSets())
        return existed
