"""Typo tolerance's quality: nDCG@10 of clean queries, of the same queries with one typo, and of those with typo
tolerance on, for BM25 and the default hybrid, per collection (embedded store).

    .venv/bin/python bench/typos.py [--datasets scifact,cranfield] [--split test] [--seed 35] [--typo JSON]

The typo generator (`inject_typo`) is seeded per query (`<seed>:<query id>`), so every run and every system sees
the same typos: it picks one word of five or more letters (letters only) uniformly, then one edit uniformly from
swap (two neighbouring letters that differ), drop (one letter), insert (a random lower-case letter anywhere) and
replace (one letter by a different random one). A query without such a word stays clean (counted as `untouched`).
The result may be another real word ("cells" → "cell"): that is a typo too, and the corrector leaves it.

Indices are `sift eval`'s (`eval-<name>`, built when missing; vectors from the shared embedding cache, query
vectors too). Every condition runs through `HybridRetriever` with its query text (clean, typo, or what
`TypoTolerance.correct` made of either) and that text's vector, as the service does. Thresholds were chosen on
SciFact's train queries (`--datasets scifact --split train`); the test splits are reported. Writes
bench/results/typos/<dataset>-<split>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from zero_click import DATASETS, _score, ensure_index

from models.embedder import CachedEmbedder, EmbeddingCache, SentenceTransformerEmbedder
from search.retrieval import HybridRetriever, RetrievalConfig
from search.settings import Settings
from search.stores.factory import make_store
from search.typo import TypoConfig, TypoTolerance
from training.beir import load_beir
from training.eval_types import EvalConfig
from training.metrics import fit_query

OUT = Path("bench/results/typos")
EDITS = ("swap", "drop", "insert", "replace")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"\w+", re.UNICODE)


def inject_typo(query: str, rng: random.Random) -> tuple[str, str | None, str | None]:
    """(query with one typo, the word as it was, the edit) — (query, None, None) when no word has 5+ letters."""
    words = [m for m in _WORD.finditer(query) if len(m.group()) >= 5 and m.group().isalpha()]
    if not words:
        return query, None, None
    m = rng.choice(words)
    w, edit = m.group(), rng.choice(EDITS)
    if edit == "swap":
        spots = [i for i in range(len(w) - 1) if w[i] != w[i + 1]]
        if not spots:
            edit = "drop"
        else:
            i = rng.choice(spots)
            typo = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    if edit == "drop":
        i = rng.randrange(len(w))
        typo = w[:i] + w[i + 1 :]
    elif edit == "insert":
        i = rng.randrange(len(w) + 1)
        typo = w[:i] + rng.choice(_LETTERS) + w[i:]
    elif edit == "replace":
        i = rng.randrange(len(w))
        typo = w[:i] + rng.choice([c for c in _LETTERS if c != w[i].lower()]) + w[i + 1 :]
    return query[: m.start()] + typo + query[m.end() :], w, edit


def run_dataset(name: str, split: str, seed: int, typo_cfg: TypoConfig) -> dict[str, object]:
    dataset = DATASETS / name
    settings = Settings()
    index = ensure_index("embedded", dataset, settings)
    data = load_beir(dataset, split)
    qids = list(data.qrels)
    clean = {q: fit_query(data.queries[q]) for q in qids}
    typo: dict[str, str] = {}
    edits: dict[str, int] = {}
    for q in qids:
        typo[q], _, edit = inject_typo(clean[q], random.Random(f"{seed}:{q}"))
        edits[edit or "untouched"] = edits.get(edit or "untouched", 0) + 1
    store = make_store("embedded", settings)
    tolerance = TypoTolerance(store, typo_cfg.model_copy(update={"scan_wait_s": 60}))  # wait for a scan
    tolerance.correct(index, "warm")  # reads the vocabulary once (timed apart)
    t = time.perf_counter()
    fixed_typo = {q: tolerance.correct(index, typo[q]).searched for q in qids}  # cold: every word computed
    cold_ms = 1000 * (time.perf_counter() - t) / len(qids)
    t = time.perf_counter()
    fixed_clean = {q: tolerance.correct(index, clean[q]).searched for q in qids}
    warm = []
    for q in qids:  # warm: the words are remembered (a repeated query)
        t1 = time.perf_counter()
        tolerance.correct(index, typo[q])
        warm.append(1000 * (time.perf_counter() - t1))
    texts = sorted(set(clean.values()) | set(typo.values()) | set(fixed_typo.values()) | set(fixed_clean.values()))
    embedder = CachedEmbedder(
        SentenceTransformerEmbedder(EvalConfig(dataset=dataset).embedder),
        EmbeddingCache(settings.cache_dir / "embeddings.sqlite"),
    )
    vectors = dict(zip(texts, embedder.embed(texts), strict=True))
    conditions = {
        "clean": clean,
        "clean + tolerance": fixed_clean,
        "typo": typo,
        "typo + tolerance": fixed_typo,
    }
    default = RetrievalConfig()
    modes = {"bm25": default.model_copy(update={"mode": "bm25"}), "hybrid (default)": default}
    retriever = HybridRetriever(store, None, threads=2)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for mode, cfg in modes.items():
            rows[mode] = {}
            for label, qs in conditions.items():
                ranked = {}
                for q in qids:
                    hits = retriever.run(index, qs[q], 100, config=cfg, vector=vectors[qs[q]], with_docs=False)
                    ranked[q] = [h.id for h in hits]
                rows[mode][label] = _score(data.qrels, ranked)
                print(name, mode, label, rows[mode][label]["ndcg@10"], flush=True)
    finally:
        retriever.close()
        store.close()
    restored = sum(fixed_typo[q] == clean[q] for q in qids if typo[q] != clean[q])
    return {
        "dataset": name,
        "split": split,
        "queries": len(qids),
        "seed": seed,
        "typo_config": typo_cfg.model_dump(),
        "edits": edits,
        "typo_queries_restored_exactly": restored,
        "clean_queries_changed": sum(fixed_clean[q] != clean[q] for q in qids),
        "correct_ms_cold_mean": round(cold_ms, 3),
        "correct_ms_warm_p50": round(statistics.median(warm), 4),
        "systems": rows,
        "examples": [
            {"clean": clean[q], "typo": typo[q], "corrected": fixed_typo[q]} for q in qids[:8] if typo[q] != clean[q]
        ],
    }


def profile_typos(
    store: Any, index: str, queries: list[str], vectors: dict[str, list[float]], facets: list[str] | None = None
) -> dict[str, Any]:
    """What typo tolerance adds to `SearchService.search` (hybrid, cached query vector, no rerank), for
    bench/search_latency.py `--typos`: the same queries, clean and with one typo each (`inject_typo`), searched
    by a service without a vocabulary (`plain`: no correction step at all) and by one with typo tolerance,
    alternating which goes first so load on the shared machine hits both. Each query set runs twice: the first
    pass computes every word's correction (`cold`), the second finds them remembered. The vocabulary's one read
    is timed apart (`vocabulary_ms`). With `facets`, a third service runs typo tolerance and those facets (the
    issue's combined goal)."""
    from bench._latency import dist
    from search.service import SearchConfig, SearchRequest, SearchService

    fallback = next(iter(vectors.values()))

    async def encode(q: str) -> list[float]:
        return vectors.get(q, fallback)

    plain = SearchService(store, encode, None, SearchConfig(default_index=index))
    plain.typos = TypoTolerance(object())  # no vocabulary: the service skips the step
    typos = SearchService(store, encode, None, SearchConfig(default_index=index))
    t = time.perf_counter()
    typos.typos.correct(index, "warm")
    vocab_ms = 1000 * (time.perf_counter() - t)
    qs = queries[:300]
    sets = {"clean": qs, "typo": [inject_typo(q, random.Random(f"35:{i}"))[0] for i, q in enumerate(qs)]}
    names = ["plain", "typos"] + (["typos+facets"] if facets else [])
    times: dict[str, list[float]] = {f"{s}/{n}": [] for s in sets for n in names}
    cold: dict[str, list[float]] = {f"{s}/typos": [] for s in sets}

    async def run() -> None:
        for label, batch in sets.items():
            for i, q in enumerate(batch * 2):
                for name in names if i % 2 else names[::-1]:
                    svc = plain if name == "plain" else typos
                    asked = list(facets or []) if name == "typos+facets" else []
                    req = SearchRequest(query=q, rerank=False, facets=asked)
                    t = time.perf_counter()
                    await svc.search(req)
                    ms = (time.perf_counter() - t) * 1000
                    times[f"{label}/{name}"].append(ms)
                    if name == "typos" and i < len(batch):
                        cold[f"{label}/typos"].append(ms)

    asyncio.run(run())
    for svc in (plain, typos):
        svc.retriever.close()
    out: dict[str, Any] = {"vocabulary_ms": round(vocab_ms, 1), "vocabulary_words": 0}
    vocab = typos.typos.vocabularies.get(index) if typos.typos.vocabularies is not None else None
    out["vocabulary_words"] = len(vocab.df) if vocab is not None else 0
    for key, ms in times.items():
        out[key] = dist(ms)
    for key, ms in cold.items():
        out[key + " (cold pass)"] = dist(ms)
    for label in sets:
        base = out[f"{label}/plain"]["p50_ms"]
        for name in names[1:]:
            out[f"{label}/{name} added_p50_pct"] = round(100 * (out[f"{label}/{name}"]["p50_ms"] - base) / base, 1)
    return out


def markdown(r: dict[str, object]) -> str:
    systems = r["systems"]
    assert isinstance(systems, dict)
    lines = [
        f"## {r['dataset']} ({r['split']}, {r['queries']} queries, seed {r['seed']}, embedded store)",
        "",
        f"Edits: {r['edits']}; typo queries restored exactly: {r['typo_queries_restored_exactly']}; clean queries "
        f"changed by tolerance: {r['clean_queries_changed']}; correction {r['correct_ms_cold_mean']} ms a query cold, "
        f"{r['correct_ms_warm_p50']} ms warm (p50).",
        "",
        "| system | clean | clean + tolerance | typo | typo + tolerance | recovered (typo+tol / clean) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, conds in systems.items():
        n = {k: v["ndcg@10"] for k, v in conds.items()}
        rec = n["typo + tolerance"] / n["clean"] if n["clean"] else 0.0
        lines.append(
            f"| {mode} | {n['clean']:.4f} | {n['clean + tolerance']:.4f} | {n['typo']:.4f} | "
            f"{n['typo + tolerance']:.4f} | {100 * rec:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="scifact,cranfield")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=35)
    ap.add_argument("--typo", help="JSON of a TypoConfig (else the defaults).")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = TypoConfig.model_validate_json(args.typo) if args.typo else TypoConfig()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = run_dataset(name, args.split, args.seed, cfg)
        md = markdown(result)
        print(md, flush=True)
        tag = "" if not args.typo else "-custom"
        stem = OUT / f"{name}-{args.split}{tag}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
        stem.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    main()
