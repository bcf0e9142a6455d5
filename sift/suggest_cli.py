"""`sift eval-suggest`: do suggestions help people find things? (registered in sift/cli.py by the lead)

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
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from search.querylog import QueryEvent
from search.settings import Settings
from search.suggest.lm_completer import Completion, LMCompleter, LMCompleterConfig, Task
from search.suggest.schemas import SuggestConfig
from search.suggest.suggester import Suggester, store_has_results
from search.text import normalize_query

log = logging.getLogger("sift.eval_suggest")
SYSTEMS = ("log", "lm", "blend")


def read_queries(path: Path) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row["_id"])] = str(row["text"])
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split("\t")
            if len(parts) < 3 or parts[0] == "query-id":
                continue
            if int(parts[2]) > 0:
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def prefixes_of(query: str, n_words: Sequence[int]) -> dict[int, str]:
    """First n words of the normalised query, for each n the query is longer than."""
    words = normalize_query(query).split(" ")
    return {n: " ".join(words[:n]) for n in n_words if len(words) > n}


def ndcg10(qrels: dict[str, dict[str, int]], rankings: dict[str, list[str]]) -> dict[str, float]:
    """Per-key nDCG@10 with ranx; keys are "<qid>#<n>" and are judged with qid's qrels."""
    from ranx import Qrels, Run, evaluate

    keys = sorted(rankings)
    q = Qrels({k: qrels[k.split("#")[0]] for k in keys})
    run = Run(
        {k: {d: float(len(ids) - i) for i, d in enumerate(ids)} or {"__none__": 0.0} for k, ids in rankings.items()}
    )
    scores = evaluate(q, run, "ndcg@10", return_mean=False)
    return {k: float(s) for k, s in zip(keys, scores, strict=True)}


def build_index(dataset: Path, data_dir: Path, index: str, rebuild: bool) -> Any:
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
) -> dict[str, Any]:
    from search.retrieval import RetrievalConfig
    from search.service import SearchConfig, SearchRequest, SearchService

    t0 = time.perf_counter()
    store = build_index(dataset, data_dir, index, rebuild)
    train = read_queries(dataset / "queries_train.jsonl")
    test = read_queries(dataset / "queries.jsonl")
    qrels = read_qrels(dataset / "qrels" / "test.tsv")
    qids = [q for q in test if q in qrels][:limit]
    prefixes = {f"{qid}#{n}": p for qid in qids for n, p in prefixes_of(test[qid], n_words).items()}

    # LM candidates for every distinct prefix, generated in batches once and shared by "lm" and "blend".
    lm_raw: dict[str, list[Completion]] = {}
    if lm_config.enabled and lm_cache is not None and lm_cache.exists():
        saved = json.loads(lm_cache.read_text())
        if saved.get("config") == lm_config.model_dump(mode="json"):
            lm_raw = {p: [Completion.model_validate(c) for c in cs] for p, cs in saved["completions"].items()}
    if lm_config.enabled:
        completer = LMCompleter(lm_config)
        todo = sorted(set(prefixes.values()) - set(lm_raw))
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
    else:
        lm_seconds = 0.0

    def complete(text: str, task: Task) -> list[Completion]:
        return lm_raw.get(text, [])

    has_results = store_has_results(store, index, min_term_coverage)
    now = datetime.now(UTC)
    events = [QueryEvent(ts=now, query=q, result_count=1) for q in train.values()]
    base = SuggestConfig(prefetch_top=0, min_term_coverage=min_term_coverage)
    suggesters = {
        "log": Suggester(base.model_copy(update={"lm": lm_config.model_copy(update={"enabled": False})})),
        "lm": Suggester(base.model_copy(update={"lm": lm_config}), complete=complete, has_results=has_results),
        "blend": Suggester(base.model_copy(update={"lm": lm_config}), complete=complete, has_results=has_results),
    }
    # Train queries passed through the search API would have results; the log holds only those.
    learnt = suggesters["log"].load(events)
    suggesters["blend"].load(events)

    top: dict[str, dict[str, str | None]] = {name: {} for name in SYSTEMS}
    for name, s in suggesters.items():
        if name == "lm" and not lm_config.enabled:
            continue
        for key, p in prefixes.items():
            got = s.suggest_blocking(p, k=10).suggestions
            top[name][key] = got[0].text if got else None
        s.close()

    service = SearchService(
        store, None, None, SearchConfig(default_index=index, retrieval=RetrievalConfig(mode="bm25"))
    )
    cache: dict[str, list[str]] = {}

    async def search_all(texts: set[str]) -> None:
        for text in sorted(texts - set(cache)):
            resp = await service.search(SearchRequest(query=text[:1000], limit=10, rerank=False, highlight=False))
            cache[text] = [r.id for r in resp.results]

    wanted = set(prefixes.values()) | {normalize_query(test[q]) for q in qids}
    wanted |= {t for per in top.values() for t in per.values() if t}
    asyncio.run(search_all(wanted))

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
        "lm": {"model": lm_config.lm.model, "enabled": lm_config.enabled, "seconds": round(lm_seconds, 1)},
        "ndcg10_full_query": round(sum(full.values()) / max(1, len(full)), 4),
        "systems": {},
    }
    for name in SYSTEMS:
        if (name == "lm" and not lm_config.enabled) or not top[name]:
            continue
        rows = {}
        for n in [*n_words, "all"]:
            keys = [k for k in prefixes if n == "all" or k.endswith(f"#{n}")]
            covered = [k for k in keys if top[name][k]]
            sugg_rank = {k: cache[top[name][k] or prefixes[k]] for k in keys}  # no suggestion: the bare prefix
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
        report["systems"][name] = rows
    report["examples"] = [
        {"prefix": prefixes[k], "query": test[k.split("#")[0]], **{n: top[n].get(k) for n in SYSTEMS}}
        for k in list(prefixes)[:12]
    ]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    store.close()
    return report


def _mean(values: dict[str, float], keys: Sequence[str]) -> float | None:
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


def eval_suggest_cmd(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="BEIR SciFact folder (queries_train.jsonl, queries.jsonl, qrels/).")
    ] = Path("../shared/datasets/scifact"),
    model: Annotated[str | None, typer.Option("--model", help="Causal LM: HF id or path (default SmolLM2).")] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Prefix index only (fast).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N judged test queries.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=64, help="Prefixes per LM generate call.")] = 8,
    index: Annotated[str, typer.Option("--index", help="Embedded BM25 index to build/reuse.")] = "scifact-suggest",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild the index even if it exists.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the JSON report here.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch CPU threads for the LM.")] = 1,
    term_coverage: Annotated[
        float, typer.Option("--term-coverage", min=0.0, max=1.0, help="LM result check strictness (see config).")
    ] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet", help="Log progress.")] = True,
) -> None:
    """Suggestion quality on SciFact: coverage and nDCG@10 of the top suggestion vs the bare prefix."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "sift.indexing"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not (dataset / "queries_train.jsonl").exists():
        typer.secho(f"error: {dataset} has no queries_train.jsonl", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    import torch

    torch.set_num_threads(threads)  # on a shared CPU, more threads than cores only slows generation down
    data_dir = Settings().data_dir / "eval-suggest"
    lm_cfg = LMCompleterConfig(enabled=not no_lm)
    if model:
        lm_cfg = lm_cfg.model_copy(update={"lm": lm_cfg.lm.model_copy(update={"model": model})})
    report = run_eval_suggest(
        dataset,
        data_dir,
        lm_cfg,
        index=index,
        limit=limit,
        batch=batch,
        rebuild=rebuild,
        lm_cache=data_dir / "lm-completions.json",
        min_term_coverage=term_coverage,
    )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    typer.echo(markdown(report))
    typer.echo(json.dumps(report["examples"][:6], indent=2))
