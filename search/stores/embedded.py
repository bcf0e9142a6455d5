"""EmbeddedStore: the no-server default. SQLite FTS5 for BM25, numpy for cosine kNN.

One SQLite file per version under `<data_dir>/versions/`; the alias is a small pointer file replaced with
`os.replace`, which is atomic on POSIX, so a crash mid-build never moves it. SQLite's WAL journal keeps
readers working while a writer appends. The tables, the FTS5 text and the SQL for filters are in `embedded_sql`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from search.documents import Document, Hit, StoredRecord
from search.filters import Filter
from search.naming import new_version_name, validate_index_name, version_alias
from search.schema import IndexSchema, SchemaError
from search.stores.base import AliasConflict, BuildLock, DocFailure, IndexNotFound, StoreError, VersionInfo, WriteResult
from search.stores.embedded_facets import EmbeddedFacets
from search.stores.embedded_feedback import EmbeddedFeedback
from search.stores.embedded_locks import acquire_file_lock, guard
from search.stores.embedded_sql import BM25_META, SCHEMA_SQL, filter_sql, filter_values, fts_content, fts_match
from search.stores.embedded_synonyms import EmbeddedSynonymSearch
from search.stores.embedded_versions import OpenVersions
from search.stores.embedded_versions import VersionFile as _Version
from search.text import bm25_terms, query_tokens


class EmbeddedStore(EmbeddedFeedback, EmbeddedSynonymSearch, EmbeddedFacets):
    """IndexStore over local files; safe for one writer and many readers (threads or processes). Pseudo-relevance
    feedback's reads (term statistics, weighted BM25, document vectors) come from `EmbeddedFeedback`."""

    def __init__(self, data_dir: Path | str, retire_grace_s: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        # Superseded versions' files close `retire_grace_s` after the alias moves (searches on them finish first).
        self._open_versions = OpenVersions(retire_grace_s)
        self._versions = self._open_versions.files
        self._lock = self._open_versions.lock

    # -- lifecycle -----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        (self.data_dir / "versions").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "aliases").mkdir(parents=True, exist_ok=True)

    def ping(self) -> bool:
        return self.data_dir.is_dir()

    def close(self) -> None:
        self._open_versions.close_all()

    def open_versions(self) -> dict[str, int]:
        """Open version files and their connection counts (what a long-lived reader holds)."""
        with self._lock:
            return {name: f.connections() for name, f in self._versions.items()}

    # -- versions and aliases -------------------------------------------------------------------------
    def _version_path(self, version: str) -> Path:
        return self.data_dir / "versions" / f"{version}.sqlite"

    def _alias_path(self, name: str) -> Path:
        return self.data_dir / "aliases" / name

    def create_version(self, name: str, dims: int, schema: IndexSchema) -> str:
        validate_index_name(name)
        self.warm_up()
        version = new_version_name(name)
        path = self._version_path(version)
        c = sqlite3.connect(path, isolation_level=None)
        try:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(SCHEMA_SQL)
            meta = {
                "name": name,
                "dims": str(dims),
                "schema": schema.model_dump_json(),
                "complete": "false",
                "created": datetime.now(UTC).isoformat(),
                BM25_META[0]: BM25_META[1],
            }
            c.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        finally:
            c.close()
        return version

    def _open(self, target: str) -> _Version:
        version = self._resolve(target)
        if version != target:
            self._open_versions.served(target, version)
        with self._lock:
            v = self._versions.get(version)
            if v is None:
                path = self._version_path(version)
                if not path.exists():
                    raise IndexNotFound(f"no index or version named {target!r}")
                v = _Version(path)
                self._versions[version] = v
            return v

    def _resolve(self, target: str) -> str:
        if version_alias(target) is not None:
            return target
        current = self.current_version(target)
        if current is None:
            raise IndexNotFound(f"index {target!r} does not exist (no version has been built yet)")
        return current

    def _meta(self, version: _Version) -> dict[str, str]:
        return dict(version.conn().execute("SELECT key, value FROM meta").fetchall())

    def mark_complete(self, version: str) -> None:
        v = self._open(version)
        v.conn().execute("UPDATE meta SET value='true' WHERE key='complete'")

    def switch_alias(self, name: str, version: str) -> None:
        validate_index_name(name)
        if not self._version_path(version).exists():
            raise IndexNotFound(f"no version named {version!r}")
        self.warm_up()
        alias = self._alias_path(name)
        tmp = alias.with_name(f".{name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(version)
            f.flush()
            os.fsync(f.fileno())
        before = self.current_version(name)
        os.replace(tmp, alias)
        if before is not None and before != version:
            self._open_versions.retire(before)

    def swap_alias(self, name: str, version: str, expected: str | None) -> None:
        validate_index_name(name)
        self.warm_up()
        with guard(self.data_dir / "aliases", f".{name}"):  # check-then-swap is atomic between processes
            now = self.current_version(name)
            if now != expected:
                raise AliasConflict(f"alias {name!r} points at {now!r}, not at {expected!r} where this build started")
            self.switch_alias(name, version)

    def acquire_build_lock(self, index: str, owner: str, lease_s: float) -> BuildLock:
        validate_index_name(index)
        return acquire_file_lock(self.data_dir / "locks", index, owner or socket.gethostname(), lease_s)

    def current_version(self, name: str) -> str | None:
        try:
            return self._alias_path(name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def list_versions(self, name: str) -> list[VersionInfo]:
        out = []
        for path in sorted((self.data_dir / "versions").glob(f"{name}-v*.sqlite")):
            version = path.stem
            if version_alias(version) != name:
                continue
            try:
                v = self._open(version)
                meta = self._meta(v)
                count = v.conn().execute("SELECT count(*) FROM docs").fetchone()[0]
                out.append(
                    VersionInfo(name=name, version=version, complete=meta.get("complete") == "true", count=count)
                )
            except sqlite3.DatabaseError:
                out.append(VersionInfo(name=name, version=version, complete=False, count=None))
        return out

    def drop_version(self, version: str) -> None:
        name = version_alias(version)
        if name is None:
            raise ValueError(f"{version!r} is not a version name")
        if self.current_version(name) == version:
            raise StoreError(f"refusing to drop {version!r}: the alias {name!r} points at it")
        self._open_versions.retire(version)
        base = self._version_path(version)
        for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")):
            p.unlink(missing_ok=True)

    def schema(self, target: str) -> IndexSchema:
        return IndexSchema.model_validate_json(self._meta(self._open(target))["schema"])

    # -- writes ---------------------------------------------------------------------------------------
    def upsert(self, target: str, records: Sequence[StoredRecord]) -> WriteResult:
        v = self._open(target)
        meta = self._meta(v)
        dims = int(meta["dims"])
        schema = IndexSchema.model_validate_json(meta["schema"])
        result = WriteResult()
        rows: list[tuple[StoredRecord, str, np.ndarray | None]] = []
        for rec in records:
            try:
                filt = filter_values(rec.doc, schema)
                vecs = _check_vectors(rec.vectors, dims)
            except (SchemaError, ValueError) as exc:
                result.failures.append(DocFailure(id=rec.doc.id, reason=str(exc)))
                continue
            rows.append((rec, json.dumps(filt), vecs))
        stems = v.stems()
        with v.lock:
            c = v.conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                for rec, filt_json, vecs in rows:
                    doc = rec.doc
                    old = c.execute("SELECT rid FROM docs WHERE id=?", (doc.id,)).fetchone()
                    if old is not None:
                        self._delete_rid(c, old[0])
                    cur = c.execute(
                        "INSERT INTO docs (id, doc, filt, content_hash) VALUES (?, ?, ?, ?)",
                        (doc.id, doc.model_dump_json(), filt_json, rec.content_hash or doc.content_hash()),
                    )
                    rid = cur.lastrowid
                    c.execute("INSERT INTO fts (rowid, content) VALUES (?, ?)", (rid, fts_content(doc, stems)))
                    if vecs is not None:
                        c.executemany(
                            "INSERT INTO vecs (rid, chunk, v) VALUES (?, ?, ?)",
                            [(rid, i, vecs[i].tobytes()) for i in range(len(vecs))],
                        )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            v.generation += 1
        result.written = len(rows)
        return result

    @staticmethod
    def _delete_rid(c: sqlite3.Connection, rid: int) -> None:
        c.execute("DELETE FROM docs WHERE rid=?", (rid,))
        c.execute("DELETE FROM fts WHERE rowid=?", (rid,))
        c.execute("DELETE FROM vecs WHERE rid=?", (rid,))

    def delete(self, target: str, ids: Sequence[str]) -> int:
        v = self._open(target)
        n = 0
        with v.lock:
            c = v.conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                for doc_id in ids:
                    row = c.execute("SELECT rid FROM docs WHERE id=?", (doc_id,)).fetchone()
                    if row is not None:
                        self._delete_rid(c, row[0])
                        n += 1
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            v.generation += 1
        return n

    def refresh(self, target: str) -> None:
        self._open(target)  # writes are visible on commit; only check the target exists

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, target: str, doc_id: str) -> Document | None:
        row = self._open(target).conn().execute("SELECT doc FROM docs WHERE id=?", (doc_id,)).fetchone()
        return Document.model_validate_json(row[0]) if row else None

    def get_hashes(self, target: str, ids: Sequence[str]) -> dict[str, str]:
        c = self._open(target).conn()
        out: dict[str, str] = {}
        ids = list(ids)
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT id, content_hash FROM docs WHERE id IN ({','.join('?' * len(part))})"
            out.update(dict(c.execute(q, part).fetchall()))
        return out

    def count(self, target: str) -> int:
        return int(self._open(target).conn().execute("SELECT count(*) FROM docs").fetchone()[0])

    def get_many(self, target: str, ids: Sequence[str]) -> dict[str, Document]:
        c = self._open(target).conn()
        out: dict[str, Document] = {}
        ids = list(dict.fromkeys(ids))
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT doc FROM docs WHERE id IN ({','.join('?' * len(part))})"
            for (raw,) in c.execute(q, part).fetchall():
                d = Document.model_validate_json(raw)
                out[d.id] = d
        return out

    def fts_query(self, target: str, query: str) -> str | None:
        """BM25's FTS5 MATCH, None without a term (faceting counts over what it matches: `embedded_facets`)."""
        # Every occurrence of a term is its own phrase: a repeated word weighs more, as in bm25s and ES's `match`.
        terms = bm25_terms(query) if self._open(target).stems() else query_tokens(query)
        return fts_match(terms) if terms else None

    def bm25_search(
        self, target: str, query: str, k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
        v = self._open(target)
        match = self.fts_query(target, query)
        if match is None or k <= 0:
            return []
        where, params = filter_sql(filters, self.schema(target))
        c = v.conn()
        if not with_docs and not where:
            # FTS5's own ranking (rank = bm25() by default) without joining docs: half the cost. Ties are broken
            # by rowid so the order is the same as the joined query's.
            top = c.execute(
                "SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank, rowid LIMIT ?", [match, k]
            ).fetchall()
            if not top:
                return []
            ids = dict(
                c.execute(
                    f"SELECT rid, id FROM docs WHERE rid IN ({','.join('?' * len(top))})", [r[0] for r in top]
                ).fetchall()
            )
            return [Hit(id=ids[rid], score=-float(rank)) for rid, rank in top if rid in ids]
        cols = "d.id, -bm25(fts) AS s" + (", d.doc" if with_docs else "")
        sql = (
            f"SELECT {cols} FROM fts JOIN docs d ON d.rid = fts.rowid "
            f"WHERE fts MATCH ? {'AND ' + where if where else ''} ORDER BY s DESC, fts.rowid LIMIT ?"
        )
        rows = c.execute(sql, [match, *params, k]).fetchall()
        if not with_docs:
            return [Hit(id=r[0], score=float(r[1])) for r in rows]
        return [Hit(id=r[0], score=float(r[1]), doc=Document.model_validate_json(r[2])) for r in rows]

    def knn_search(
        self, target: str, vector: Sequence[float], k: int, filters: Sequence[Filter] = (), *, with_docs: bool = True
    ) -> list[Hit]:
        v = self._open(target)
        mat, rids = v.matrix()
        if len(rids) == 0 or k <= 0:
            return []
        q = np.asarray(vector, dtype=np.float32)
        if q.shape != (mat.shape[1],):
            raise ValueError(f"query vector has {q.shape[-1]} dims, the index has {mat.shape[1]}")
        norm = float(np.linalg.norm(q))
        if norm == 0:
            raise ValueError("query vector is all zeros")
        sims = mat @ (q / norm)
        if filters:
            allowed = self._filtered_rids(v, filters, self.schema(target))
            mask = np.isin(rids, allowed)
            sims = np.where(mask, sims, -np.inf)
        best = _best_per_doc(sims, rids, k)
        if not best:
            return []
        c = v.conn()
        marks = ",".join("?" * len(best))
        if not with_docs:
            ids = dict(c.execute(f"SELECT rid, id FROM docs WHERE rid IN ({marks})", list(best)).fetchall())
            return [Hit(id=ids[rid], score=(1 + s) / 2) for rid, s in best.items() if rid in ids]
        docs = dict(c.execute(f"SELECT rid, doc FROM docs WHERE rid IN ({marks})", list(best)).fetchall())
        # Same scale as Elasticsearch's cosine similarity: (1 + cos) / 2.
        return [
            Hit(id=(d := Document.model_validate_json(docs[rid])).id, score=(1 + s) / 2, doc=d)
            for rid, s in best.items()
            if rid in docs
        ]

    def _filtered_rids(self, v: _Version, filters: Sequence[Filter], schema: IndexSchema) -> np.ndarray:
        where, params = filter_sql(filters, schema)
        rows = v.conn().execute(f"SELECT d.rid FROM docs d WHERE {where}", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def _best_per_doc(sims: np.ndarray, rids: np.ndarray, k: int) -> dict[int, float]:
    """Top k documents, each scored by its best chunk, best first (ties: lower chunk position first).

    A full sort of every chunk is most of a kNN query's cost; the top k documents are among the top
    `k * 4` chunks unless documents have many near-identical chunks, so sort that slice and widen when short.
    """
    n = len(sims)
    take = min(n, max(4 * k, 64))
    while True:
        if take < n:
            part = np.argpartition(-sims, take - 1)[:take]
            order = part[np.lexsort((part, -sims[part]))]
        else:
            order = np.argsort(-sims, kind="stable")
        best: dict[int, float] = {}
        for i in order:
            s = sims[i]
            if not np.isfinite(s):
                break
            rid = int(rids[i])
            if rid not in best:
                best[rid] = float(s)
                if len(best) >= k:
                    return best
        if take >= n:
            return best
        take = min(n, take * 4)


def _check_vectors(vectors: list[list[float]], dims: int) -> np.ndarray | None:
    if not vectors:
        return None
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dims:
        raise ValueError(f"vector has {arr.shape[-1]} dims, the index expects {dims}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(arr)):
        raise ValueError("vector is all zeros or not finite (cosine similarity is undefined)")
    return arr / norms
