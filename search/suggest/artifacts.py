"""The suggestion structures of one index version: the corpus index and the precomputed LM completions.

Both belong to a version (its documents; its phrases' result checks), so they are files named after it under
`<data_dir>/suggest/`: built when a version is first served (the corpus index reads every document once:
about 2 s for the 3,000-document demo on a loaded 2-CPU machine) or ahead of time (`sift suggest build` right
after `sift index`, and the precompute job), then loaded in well under a second by every later process. A
watcher follows the alias: when a new version goes live its structures are built beside the old ones and
swapped in whole, as the prefix index is refreshed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from search.suggest.corpus import CorpusIndex, CorpusSuggestConfig, build_phrases
from search.suggest.precomputed import PrecomputedCompletions

log = logging.getLogger("sift.suggest")


def artifact_dir(data_dir: Path) -> Path:
    return data_dir / "suggest"


def corpus_path(data_dir: Path, version: str) -> Path:
    return artifact_dir(data_dir) / f"{version}.corpus.json"


def lm_path(data_dir: Path, version: str) -> Path:
    return artifact_dir(data_dir) / f"{version}.lm.json"


def iter_documents(store: Any, version: str) -> Iterator[tuple[str, str]]:
    """(title, body) of every document of `version`: the embedded store's SQLite file read-only, or an
    Elasticsearch scroll. The store protocol has no scan (search never needs one), so this reads below it."""
    client = getattr(store, "client", None)
    if client is not None:
        from elasticsearch import helpers

        for hit in helpers.scan(client, index=version, _source=["title", "body"], size=500):
            src = hit.get("_source", {})
            yield str(src.get("title") or ""), str(src.get("body") or "")
        return
    path = store.data_dir / "versions" / f"{version}.sqlite"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for (raw,) in conn.execute("SELECT doc FROM docs"):
            doc = json.loads(raw)
            yield str(doc.get("title") or ""), str(doc.get("body") or "")
    finally:
        conn.close()


def corpus_for(store: Any, version: str, data_dir: Path, cfg: CorpusSuggestConfig) -> CorpusIndex:
    """The version's corpus index: its file when there is one, else built from the documents and saved."""
    path = corpus_path(data_dir, version)
    loaded = CorpusIndex.load(path, cfg)
    if loaded is not None:
        return loaded
    built = CorpusIndex(build_phrases(iter_documents(store, version), cfg), cfg, version)
    try:
        built.save(path)
    except OSError as exc:  # a read-only data dir: serve it anyway, rebuild next start
        log.warning("could not save the corpus suggestions (%s)", exc)
    log.info("built %d corpus suggestions for %s", len(built), version)
    return built


class VersionArtifacts:
    """Loads a suggester's corpus index and precomputed completions for the live version of `index`, and
    reloads them when the alias moves (checked every `interval_s`)."""

    def __init__(self, suggester: Any, store: Any, index: str, data_dir: Path, interval_s: float = 30.0) -> None:
        self.suggester = suggester
        self.store = store
        self.index = index
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.version: str | None = None
        self._lm_mtime: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._helpers: list[threading.Thread] = []

    def refresh(self) -> bool:
        """Load the live version's structures if it changed; True when something new was swapped in."""
        try:
            version = self.store.current_version(self.index)
        except Exception as exc:  # the store is down: keep serving what is loaded
            log.warning("suggest artifacts: no live version (%s)", type(exc).__name__)
            return False
        if version is None:
            return False
        cfg = self.suggester.config
        changed = version != self.version
        if changed and cfg.corpus.enabled:
            corpus = corpus_for(self.store, version, self.data_dir, cfg.corpus)
            self.suggester.corpus = corpus
            if cfg.corpus.typo:  # reading the vocabulary takes seconds: the index serves without it meanwhile
                t = threading.Thread(
                    target=lambda: corpus.set_corrector(self._vocabulary_corrector()),
                    name="sift-suggest-vocabulary",
                    daemon=True,
                )
                t.start()
                self._helpers = [h for h in self._helpers if h.is_alive()] + [t]
        path = lm_path(self.data_dir, version)
        mtime = path.stat().st_mtime if path.exists() else None
        if cfg.precomputed_lm and (changed or mtime != self._lm_mtime):  # a precompute job finished since
            self.suggester.precomputed = PrecomputedCompletions.load(path)
            changed = True
        self.version, self._lm_mtime = version, mtime
        return changed

    def _vocabulary_corrector(self) -> Callable[[str], str | None] | None:
        """The index vocabulary's prefix corrector (`search.typo`), read here, off the request path; None when
        the store has no vocabulary (the corpus index's own one-edit fix still applies)."""
        try:
            from search.typo import TypoTolerance

            corrector = TypoTolerance(self.store).corrector(self.index)
        except Exception as exc:
            log.warning("suggest: no vocabulary corrector (%s)", type(exc).__name__)
            return None
        if corrector is None:
            return None

        def fix(prefix: str) -> str | None:
            found = corrector.correct_prefix(prefix, 1)
            return found[0] if found else None

        return fix

    def start(self) -> None:
        """Load now (before the API answers), then follow the alias in the background."""
        try:
            self.refresh()
        except Exception as exc:  # suggestions from the log and the LM still work
            log.warning("suggest artifacts failed to load (%s): %s", type(exc).__name__, exc)
        if self.interval_s <= 0 or self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.refresh()
                except Exception as exc:
                    log.warning("suggest artifacts refresh failed (%s)", type(exc).__name__)

        self._thread = threading.Thread(target=run, name="sift-suggest-artifacts", daemon=True)
        self._thread.start()

    def close(self, wait_s: float = 10.0) -> None:
        """Stop following the alias; wait for a vocabulary read in progress (a thread killed at interpreter exit
        inside a C extension can crash it)."""
        self._stop.set()
        for t in self._helpers:
            t.join(wait_s)
