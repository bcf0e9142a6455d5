"""LM completions computed ahead of time, per index version, so a keystroke never waits for the causal LM.

A CPU-bound LM takes 100s of ms per prefix: per keystroke it either blows the deadline or takes a CPU from
search. Most keystrokes hit a small set of prefixes (the query log's head, the corpus's frequent phrases), so a
batch job generates their completions once (`precompute`: Ray Data, one actor holding the LM, batches of
prefixes), runs them through the suggester's own normalisation, safety filter and result check, and writes one
JSON file per index version. The online LM stays for the misses, under its budget (`suggest_lm` quotas, the
deadline, the workers' queue).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from models.ray_session import shutdown_ray
from search.suggest.corpus import CorpusIndex
from search.suggest.indices import PrefixIndex
from search.suggest.lm_completer import Completion, LMCompleterConfig, Task
from search.text import normalize_prefix

log = logging.getLogger("sift.suggest")
FORMAT = 1
Candidates = list[tuple[str, float]]
BatchComplete = Callable[[list[str]], list[list[Completion]]]


class PrecomputedCompletions:
    """Prefix → checked LM candidates of one index version; read-only once loaded (readers take no lock)."""

    def __init__(self, table: dict[str, Candidates] | None = None, version: str = "") -> None:
        self.table = table or {}
        self.version = version

    def __len__(self) -> int:
        return len(self.table)

    def get(self, prefix: str) -> Candidates | None:
        return self.table.get(prefix)

    def extended(self, prefix: str, back: int = 24) -> Candidates:
        """Candidates of the longest shorter prefix that still match `prefix` ("protein fol" after "protein f")."""
        for cut in range(len(prefix) - 1, max(0, len(prefix) - back), -1):
            hit = self.table.get(prefix[:cut])
            if hit:
                ext = [(t, s) for t, s in hit if t.startswith(prefix) and t != prefix.rstrip()]
                if ext:
                    return ext
        return []

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "version": self.version, "table": self.table}))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PrecomputedCompletions | None:
        """The saved table, or None when missing, unreadable or of another format."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("table"), dict):
            return None
        table = {str(p): [(str(t), float(s)) for t, s in rows] for p, rows in raw["table"].items()}
        return cls(table, str(raw.get("version", "")))


def prefixes_that_matter(
    log_prefixes: PrefixIndex | None,
    corpus: CorpusIndex | None,
    n_log: int = 500,
    n_corpus: int = 500,
    min_chars: int = 3,
) -> list[str]:
    """The query log's most searched prefixes, then the character prefixes (3+) of the corpus's best phrases."""
    out: dict[str, None] = {}
    if log_prefixes is not None:
        out.update((p, None) for p in log_prefixes.frequent_prefixes(n_log, min_chars=min_chars))
    if corpus is not None and n_corpus > 0:
        best = sorted(corpus.phrases.items(), key=lambda kv: (-kv[1], kv[0]))
        added = 0
        for phrase, _ in best:
            for i in range(min_chars, len(phrase) + 1):
                p = phrase[:i]
                if p.strip() == p and p not in out:
                    out[p] = None
                    added += 1
            if added >= n_corpus:
                break
    return [normalize_prefix(p) for p in out if normalize_prefix(p)]


class _LMActor:
    """One LM per actor (Ray Data reuses it across batches)."""

    def __init__(self, config: dict[str, Any], registry_root: str | None) -> None:
        from search.suggest.live_lm import make_completer

        self.completer = make_completer(LMCompleterConfig.model_validate(config), registry_root)
        self.completer.warm_up()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch["prefix"]]
        rows = self.completer.complete(texts, "complete")
        return {"prefix": texts, "raw": [json.dumps([c.model_dump() for c in r]) for r in rows]}


def ray_generate(
    prefixes: Sequence[str], config: LMCompleterConfig, registry_root: str | None = None, batch_size: int = 16
) -> dict[str, list[Completion]]:
    """Raw LM completions of `prefixes` on Ray Data (a local Ray unless RAY_ADDRESS names a cluster)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
    try:
        ds: Any = ray.data.from_items([{"prefix": p} for p in prefixes])
        ds = ds.map_batches(
            _LMActor,
            fn_constructor_args=(config.model_dump(), registry_root),
            batch_size=batch_size,
            concurrency=1,
            num_cpus=1,
        )
        out: dict[str, list[Completion]] = {}
        for row in ds.iter_rows():
            out[str(row["prefix"])] = [Completion.model_validate(c) for c in json.loads(row["raw"])]
        return out
    finally:
        if started:
            shutdown_ray()


def precompute(
    prefixes: Iterable[str],
    raw: dict[str, list[Completion]],
    checked: Callable[[str, Task, Callable[[str, Task], list[Completion]]], Candidates],
    version: str = "",
) -> PrecomputedCompletions:
    """The table of `prefixes` from their raw LM lines, each list passed through `checked` (the suggester's
    normalisation, safety filter and result check: `Suggester.checked_candidates`)."""
    table: dict[str, Candidates] = {}
    for p in prefixes:
        lines = raw.get(p)
        if lines is None:
            continue
        kept = checked(p, "complete", lambda _t, _task, lines=lines: lines)  # type: ignore[misc]
        if kept:
            table[p] = kept
    log.info("precomputed LM completions: %d of %d prefixes kept some", len(table), len(raw))
    return PrecomputedCompletions(table, version)
