"""Open version files of the embedded store, and their retirement when an alias moves on.

A long-lived reader (a server) resolves the alias on every call; when a reindex moves it, the version it served
before is superseded. Its connections and vector matrix would otherwise stay open for the life of the process,
one more set per reindex. It is retired instead (out of the map at once, its matrix freed) and its connections
are closed after a grace period, so a search already running on it finishes first.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from search.stores.embedded_sql import BM25_META


class VersionFile:
    """An open version file: a connection per thread plus the in-memory vector matrix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conns: dict[int, sqlite3.Connection] = {}  # by thread id: closable from any thread
        self._conns_lock = threading.Lock()
        self.lock = threading.RLock()
        self.generation = 0  # bumped on every write, invalidates the vector matrix
        self._matrix: tuple[int, np.ndarray, np.ndarray] | None = None
        self._stems: bool | None = None
        self.closed = False

    def stems(self) -> bool:
        """Whether the FTS5 table holds `bm25_terms` (false: a file written before, raw text, Porter tokenizer)."""
        if self._stems is None:
            row = self.conn().execute("SELECT value FROM meta WHERE key=?", (BM25_META[0],)).fetchone()
            self._stems = row is not None and row[0] == BM25_META[1]
        return self._stems

    def conn(self) -> sqlite3.Connection:
        me = threading.get_ident()
        c = self._conns.get(me)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            with self._conns_lock:
                live = {t.ident for t in threading.enumerate()}
                for tid in [t for t in self._conns if t not in live]:  # threads that ended: close theirs
                    self._conns.pop(tid).close()
                self._conns[me] = c
        return c

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """All chunk vectors (normalised, float32) and the row id each belongs to."""
        with self.lock:
            if self._matrix is not None and self._matrix[0] == self.generation:
                return self._matrix[1], self._matrix[2]
            rows = self.conn().execute("SELECT rid, v FROM vecs ORDER BY rid, chunk").fetchall()
            if rows:
                rids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                mat = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            else:
                rids = np.zeros(0, dtype=np.int64)
                mat = np.zeros((0, 0), dtype=np.float32)
            self._matrix = (self.generation, mat, rids)
            return mat, rids

    def drop_matrix(self) -> None:
        self._matrix = None

    def connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns.values():
                c.close()
            self._conns.clear()
        self._matrix = None
        self.closed = True


class OpenVersions:
    """Version name → VersionFile, the version each alias was last served from, and retired files."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.files: dict[str, VersionFile] = {}
        self._served: dict[str, str] = {}  # alias → version it last resolved to
        self._retired: list[tuple[float, VersionFile]] = []
        self.lock = threading.Lock()

    def served(self, alias: str, version: str) -> None:
        """Note that `alias` resolved to `version`; the version it resolved to before is retired."""
        with self.lock:
            before = self._served.get(alias)
            self._served[alias] = version
        if before is not None and before != version:
            self.retire(before)
        elif self._retired:
            self.reap()  # a reader that never sees another swap still closes what it retired

    def retire(self, version: str) -> None:
        with self.lock:
            f = self.files.pop(version, None)
            if f is not None:
                f.drop_matrix()
                self._retired.append((time.monotonic(), f))
        self.reap()

    def reap(self) -> None:
        """Close retired files whose grace period is over."""
        now = time.monotonic()
        with self.lock:
            due = [f for t, f in self._retired if now - t >= self.grace_s]
            self._retired = [(t, f) for t, f in self._retired if now - t < self.grace_s]
        for f in due:
            f.close()

    def close_all(self) -> None:
        with self.lock:
            files = list(self.files.values()) + [f for _, f in self._retired]
            self.files.clear()
            self._retired.clear()
            self._served.clear()
        for f in files:
            f.close()
