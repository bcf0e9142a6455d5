"""Do suggestions help people find things? The measurement behind `sift eval-suggest`.

Setup: SciFact's training queries are the query log; the first 1, 2 and 3 words of each test query are
what a user has typed. For the prefix index alone, the LM alone and the blend, it reports the share of
prefixes with at least one suggestion, and nDCG@10 (ranx) of searching the top suggestion versus the
bare prefix, through the same `SearchService` as the API. The index is BM25-only (`embed=False`) and
searched in bm25 mode, so the comparison is about the query text, not the encoder. LM candidates are
generated without the serving deadline (batched): this measures what a warm completion cache serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from logs.querylog import QueryEvent
from search.stores.base import IndexStore
from search.suggest.lm_completer import Completion, LMCompleter, LMCompleterConfig, Task
from search.suggest.result_check import store_has_results
from search.suggest.schemas import CoverageOf, SuggestConfig
from search.suggest.suggester import Suggester
from search.text import normalize_query
from training.beir import read_qrels, read_queries, relevant_only
from training.metrics import per_query_metrics, ranking_to_run

log = logging.getLogger("sift.eval_suggest")
SYSTEMS = ("log", "lm", "blend")
SERVED = SuggestConfig()  # the served defaults of the settings measured here


def prefixes_of(query: str, n_words: Sequence[int]) -> dict[int, str]:
    """First n words of the normalised query, for each n the query is longer than."""
    words = normalize_query(query).split(" ")
    return {n: " ".join(words[:n]) for n in n_words if len(words) > n}


def ndcg10(qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Per-key nDCG@10 with ranx; keys are "<qid>#<n>" and are judged with qid's qrels."""
    judged = {k: qrels[k.split("#")[0]] for k in rankings}
    run = {k: ranking_to_run(ids) for k, ids in rankings.items()}
    return per_query_metrics(judged, run, ("ndcg@10",))["ndcg@10"]


def build_index(dataset: Path, data_dir: Path, index: str, rebuild: bool) -> IndexStore:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore

    store = EmbeddedStore(data_dir / "indices")
    if rebuild or store.current_version(index) is None:
        cfg = IndexingConfig(embed=False, dead_letter_dir=data_dir / "dead-letter", progress=False, format="beir")
        report = IndexingPipeline(store, None, cfg).build(dataset, index)
        log.info("indexed %d SciFact documents (BM25 only) into %s", report.indexed, index)
    return store


def run_eval_suggest(
    dataset: Path,
    data_dir: Path,
    lm_config: LMCompleterConfig,
    *,
    index: str = "scifact-suggest",
    limit: int | None = None,
    n_words: Sequence[int] = (1, 2, 3),
    batch: int = 8,
    rebuild: bool = False,
    lm_cache: Path | None = None,
    min_term_coverage: float = 1.0,
    split: tuple[Mapping[str, str], Mapping[str, str], Mapping[str, Mapping[str, int]]] | None = None,
    skip: Collection[str] = (),
    coverage_of: CoverageOf = "added",
    min_shared: int = SERVED.lm_min_shared_results,
) -> dict[str, Any]:
    """`split`: (log queries, test queries, test qrels) instead of the dataset's train and test files (a collection
    without a train split); `skip`: test query ids left out (near-twins of a logged query)."""
    t0 = time.perf_counter()
    store = build_index(dataset, data_dir, index, rebuild)
    train, test, qrels = read_split(dataset, split)
    qids = [q for q in test if q in qrels and q not in skip][:limit]
    prefixes = {f"{qid}#{n}": p for qid in qids for n, p in prefixes_of(test[qid], n_words).items()}

    # LM candidates for every distinct prefix, generated in batches once and shared by "lm" and "blend".
    lm_raw, lm_seconds = lm_candidates(set(prefixes.values()), lm_config, batch, lm_cache)
    suggesters, learnt = _suggesters(store, index, train, lm_config, lm_raw, min_term_coverage, coverage_of, min_shared)
    top, blend_source = _top_suggestions(suggesters, prefixes, lm_config)

    wanted = set(prefixes.values()) | {normalize_query(test[q]) for q in qids}
    wanted |= {t for per in top.values() for t in per.values() if t}
    cache = _search_all(store, index, wanted)

    bare = ndcg10(qrels, {k: cache[p] for k, p in prefixes.items()})
    full = ndcg10(qrels, {qid: cache[normalize_query(test[qid])] for qid in qids})
    report: dict[str, Any] = {
        "dataset": str(dataset),
        "log_queries": len(train),
        "log_learnt": learnt,
        "test_queries": len(qids),
        "prefixes": {str(n): sum(1 for k in prefixes if k.endswith(f"#{n}")) for n in n_words},
        "distinct_prefixes": len(set(prefixes.values())),
        "retrieval": "bm25 (BM25-only index, embed=False)",
        "min_term_coverage": min_term_coverage,
        "term_coverage_of": coverage_of,
        "lm_min_shared_results": min_shared,
        "lm": {"model": lm_config.lm.model, "enabled": lm_config.enabled, "seconds": round(lm_seconds, 1)},
        "ndcg10_full_query": round(sum(full.values()) / max(1, len(full)), 4),
        "systems": {},
    }
    for name in SYSTEMS:
        if (name == "lm" and not lm_config.enabled) or not top[name]:
            continue
        report["systems"][name] = _system_rows(top[name], prefixes, n_words, cache, qrels, bare)
    report["blend_by_source"] = _by_source(top["blend"], blend_source, prefixes, cache, qrels, bare)
    report["examples"] = [
        {"prefix": prefixes[k], "query": test[k.split("#")[0]], **{n: top[n].get(k) for n in SYSTEMS}}
        for k in list(prefixes)[:12]
    ]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    store.close()
    return report


Split = tuple[Mapping[str, str], Mapping[str, str], Mapping[str, Mapping[str, int]]]


def read_split(dataset: Path, split: Split | None) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """(log queries, test queries, relevant test qrels): `split` as given, else the dataset's train and test files."""
    if split is None:
        split = (
            read_queries(dataset / "queries_train.jsonl"),
            read_queries(dataset / "queries.jsonl"),
            read_qrels(dataset / "qrels" / "test.tsv"),
        )
    return dict(split[0]), dict(split[1]), relevant_only(split[2])


def lm_candidates(
    prefixes: set[str], lm_config: LMCompleterConfig, batch: int, lm_cache: Path | None
) -> tuple[dict[str, list[Completion]], float]:
    """LM completions of every prefix (those saved in `lm_cache` for the same config are reused), and the
    seconds spent generating the rest."""
    lm_raw: dict[str, list[Completion]] = {}
    if lm_config.enabled and lm_cache is not None and lm_cache.exists():
        saved = json.loads(lm_cache.read_text())
        if saved.get("config") == lm_config.model_dump(mode="json"):
            lm_raw = {p: [Completion.model_validate(c) for c in cs] for p, cs in saved["completions"].items()}
    if not lm_config.enabled:
        return lm_raw, 0.0
    completer = LMCompleter(lm_config)
    todo = sorted(prefixes - set(lm_raw))
    t = time.perf_counter()
    for i in range(0, len(todo), batch):
        part = todo[i : i + batch]
        for p, cands in zip(part, completer.complete(part), strict=True):
            lm_raw[p] = cands
        done = min(i + batch, len(todo))
        log.info("LM: %d/%d prefixes (%.1f s)", done, len(todo), time.perf_counter() - t)
    lm_seconds = time.perf_counter() - t
    if lm_cache is not None and todo:
        lm_cache.parent.mkdir(parents=True, exist_ok=True)
        lm_cache.write_text(
            json.dumps(
                {
                    "config": lm_config.model_dump(mode="json"),
                    "completions": {p: [c.model_dump() for c in cs] for p, cs in lm_raw.items()},
                }
            )
        )
    return lm_raw, lm_seconds


def _suggesters(
    store: IndexStore,
    index: str,
    train: Mapping[str, str],
    lm_config: LMCompleterConfig,
    lm_raw: Mapping[str, list[Completion]],
    min_term_coverage: float,
    coverage_of: CoverageOf = "added",
    min_shared: int = SERVED.lm_min_shared_results,
) -> tuple[dict[str, Suggester], int]:
    """One suggester per system, the log ones loaded with the training queries; and how many the log learnt."""

    def complete(text: str, task: Task) -> list[Completion]:
        return lm_raw.get(text, [])

    has_results = store_has_results(store, index, min_term_coverage, coverage_of=coverage_of, min_shared=min_shared)
    now = datetime.now(UTC)
    events = [QueryEvent(ts=now, query=q, result_count=1) for q in train.values()]
    base = SuggestConfig(
        prefetch_top=0,
        min_term_coverage=min_term_coverage,
        term_coverage_of=coverage_of,
        lm_min_shared_results=min_shared,
    )
    suggesters = {
        "log": Suggester(base.model_copy(update={"lm": lm_config.model_copy(update={"enabled": False})})),
        "lm": Suggester(base.model_copy(update={"lm": lm_config}), complete=complete, has_results=has_results),
        "blend": Suggester(base.model_copy(update={"lm": lm_config}), complete=complete, has_results=has_results),
    }
    # Train queries passed through the search API would have results; the log holds only those.
    learnt = suggesters["log"].load(events)
    suggesters["blend"].load(events)
    return suggesters, learnt


def _top_suggestions(
    suggesters: Mapping[str, Suggester], prefixes: Mapping[str, str], lm_config: LMCompleterConfig
) -> tuple[dict[str, dict[str, str | None]], dict[str, str]]:
    """system → prefix key → the first suggestion (None: nothing suggested), and the blend's first suggestion's
    source per prefix key; each suggester is closed after."""
    top: dict[str, dict[str, str | None]] = {name: {} for name in SYSTEMS}
    blend_source: dict[str, str] = {}
    for name, s in suggesters.items():
        if name == "lm" and not lm_config.enabled:
            continue
        for key, p in prefixes.items():
            got = s.suggest_blocking(p, k=10).suggestions
            top[name][key] = got[0].text if got else None
            if name == "blend" and got:
                blend_source[key] = got[0].source
        s.close()
    return top, blend_source


def _search_all(store: IndexStore, index: str, texts: set[str]) -> dict[str, list[str]]:
    """Top-10 document ids of each text, searched once through the BM25 `SearchService`."""
    from search.retrieval import RetrievalConfig
    from search.service import SearchConfig, SearchRequest
    from search.wiring import build_service

    service = build_service(store, SearchConfig(default_index=index, retrieval=RetrievalConfig(mode="bm25")))
    cache: dict[str, list[str]] = {}

    async def search_all() -> None:
        for text in sorted(texts - set(cache)):
            resp = await service.search(SearchRequest(query=text[:1000], limit=10, rerank=False, highlight=False))
            cache[text] = [r.id for r in resp.results]

    asyncio.run(search_all())
    return cache


def _system_rows(
    top: Mapping[str, str | None],
    prefixes: Mapping[str, str],
    n_words: Sequence[int],
    cache: Mapping[str, list[str]],
    qrels: Mapping[str, Mapping[str, int]],
    bare: Mapping[str, float],
) -> dict[str, dict[str, Any]]:
    """Per prefix length (and "all"): coverage and nDCG@10 of the top suggestion against the bare prefix."""
    rows = {}
    for n in [*n_words, "all"]:
        keys = [k for k in prefixes if n == "all" or k.endswith(f"#{n}")]
        covered = [k for k in keys if top[k]]
        sugg_rank = {k: cache[top[k] or prefixes[k]] for k in keys}  # no suggestion: the bare prefix
        sugg = ndcg10(qrels, sugg_rank) if keys else {}
        rows[str(n)] = {
            "prefixes": len(keys),
            "coverage": round(len(covered) / len(keys), 4) if keys else None,
            "ndcg10_bare_prefix": _mean(bare, keys),
            "ndcg10_top_suggestion": _mean(sugg, keys),
            "covered_ndcg10_bare_prefix": _mean(bare, covered),
            "covered_ndcg10_top_suggestion": _mean(sugg, covered),
            "wins": sum(sugg[k] > bare[k] + 1e-9 for k in covered),
            "losses": sum(sugg[k] < bare[k] - 1e-9 for k in covered),
        }
    return rows


def _by_source(
    top: Mapping[str, str | None],
    source: Mapping[str, str],
    prefixes: Mapping[str, str],
    cache: Mapping[str, list[str]],
    qrels: Mapping[str, Mapping[str, int]],
    bare: Mapping[str, float],
) -> dict[str, dict[str, Any]]:
    """The blend's covered prefixes by where the top suggestion came from (log, lm, log+lm): does each kind
    search better than the bare prefix? (On validation the LM's did not: the drift guard's reason.)"""
    out: dict[str, dict[str, Any]] = {}
    for src in sorted(set(source.values())):
        keys = [k for k in prefixes if source.get(k) == src and top.get(k)]
        sugg = ndcg10(qrels, {k: cache[top[k] or prefixes[k]] for k in keys}) if keys else {}
        out[src] = {"prefixes": len(keys), "ndcg10_top_suggestion": _mean(sugg, keys),
                    "ndcg10_bare_prefix": _mean(bare, keys)}  # fmt: skip
    return out


def _mean(values: Mapping[str, float], keys: Sequence[str]) -> float | None:
    return round(sum(values[k] for k in keys) / len(keys), 4) if keys else None


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"SciFact: {report['log_queries']} training queries as the log, {report['test_queries']} test queries, "
        f"{report['distinct_prefixes']} distinct prefixes; retrieval {report['retrieval']}; "
        f"full-query nDCG@10 {report['ndcg10_full_query']}.",
        "",
        "| system | words | prefixes | coverage | nDCG@10 bare | nDCG@10 top suggestion | covered: bare → sugg. "
        "| W / L |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in report["systems"].items():
        for n, r in rows.items():
            lines.append(
                f"| {name} | {n} | {r['prefixes']} | {r['coverage']:.1%} | {r['ndcg10_bare_prefix']} | "
                f"{r['ndcg10_top_suggestion']} | {r['covered_ndcg10_bare_prefix']} → "
                f"{r['covered_ndcg10_top_suggestion']} | {r['wins']} / {r['losses']} |"
            )
    return "\n".join(lines)


def run_qac(
    dataset: Path,
    data_dir: Path,
    lm_config: LMCompleterConfig,
    *,
    index: str = "scifact-suggest",
    cuts: int = 2,
    batch: int = 8,
    lm_cache: Path | None = None,
    split: tuple[Mapping[str, str], Mapping[str, str], Mapping[str, Mapping[str, int]]] | None = None,
    seed: int = 0,
    min_term_coverage: float = 1.0,
    coverage_of: CoverageOf = "added",
    min_shared: int = SERVED.lm_min_shared_results,
) -> dict[str, Any]:
    """QAC figures (training/qac_eval.py) of the prefix index, the LM and the blend: held-out queries without a
    near-twin in the log, typed up to `cuts` random points each; `split` as for `run_eval_suggest`."""
    from training.qac_eval import near_twins, qac_prefixes, qac_table

    store = build_index(dataset, data_dir, index, rebuild=False)
    train, test, qrels = read_split(dataset, split)
    twins = near_twins(test, train.values())
    held = {q: t for q, t in test.items() if q in qrels and q not in twins}
    prefixes = qac_prefixes(held, train.values(), per_query=cuts, seed=seed)
    raw, seconds = lm_candidates({p.typed for p in prefixes}, lm_config, batch, lm_cache)
    suggesters, _ = _suggesters(store, index, train, lm_config, raw, min_term_coverage, coverage_of, min_shared)
    systems: dict[str, dict[str, list[str]]] = {}
    for name, s in suggesters.items():
        if name == "lm" and not lm_config.enabled:
            continue
        systems[name] = {p.key: [x.text for x in s.suggest_blocking(p.typed, k=10).suggestions] for p in prefixes}
        s.close()
    store.close()
    return {
        "near_twins": len(twins),
        "held_out_queries": len(held),
        "prefixes": len(prefixes),
        "seen": sum(p.seen for p in prefixes),
        "lm_seconds": round(seconds, 1),
        "table": qac_table(systems, prefixes),
    }


def related_success(
    store: IndexStore,
    index: str,
    lm_config: LMCompleterConfig,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    batch: int = 8,
) -> dict[str, float | int]:
    """Related searches: the share of queries whose top LM rewrite (task `related`) returns a judged-relevant
    document in its BM25 top 10, beside the share for the query itself."""
    qids = sorted(q for q in queries if q in qrels)
    texts = [normalize_query(queries[q]) for q in qids]
    lm = LMCompleter(lm_config)
    rewrites: list[str | None] = []
    for i in range(0, len(texts), batch):
        for original, cands in zip(texts[i : i + batch], lm.complete(texts[i : i + batch], "related"), strict=True):
            best = [c.text for c in sorted(cands, key=lambda c: -c.score) if normalize_query(c.text) != original]
            rewrites.append(best[0] if best else None)
    cache = _search_all(store, index, set(texts) | {r for r in rewrites if r})
    hit = [any(d in qrels[q] for d in cache[r]) if r else False for q, r in zip(qids, rewrites, strict=True)]
    own = [any(d in qrels[q] for d in cache[t]) for q, t in zip(qids, texts, strict=True)]
    n = max(1, len(qids))
    return {
        "queries": len(qids),
        "rewritten": sum(r is not None for r in rewrites),
        "related_success10": round(sum(hit) / n, 4),
        "query_success10": round(sum(own) / n, 4),
    }
