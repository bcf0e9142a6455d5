"""`sift suggest build | precompute`: the per-version suggestion structures, made ahead of time.

`build` writes the live version's corpus index (titles, frequent phrases) so the API and the keystroke server
load it at start instead of reading every document; `precompute` runs the suggestion LM over the prefixes that
matter (the query log's head, the corpus's frequent phrases) as a Ray Data job and writes the checked
completions. Both are files under `<data_dir>/suggest/` named after the version; run them after `sift index`
(a new version) and `precompute` again as the log grows (the servers pick a new file up within 30 s).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from sift.cli_common import _app_config, _fail
from sift.exit_codes import FAILED

suggest_app = typer.Typer(help="Suggestion structures per index version: corpus phrases, precomputed LM completions.")


def _setup(config: Path | None) -> tuple[Any, Any, Any, Path, str, str]:
    from search.settings import Settings
    from search.stores.base import StoreError
    from search.stores.factory import make_store

    cfg = _app_config(config)
    settings = Settings()
    if cfg.elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": cfg.elasticsearch_url})
    store = make_store(cfg.store, settings, data_dir=cfg.data_dir, request_timeout=cfg.es_request_timeout_s)
    index = cfg.search.default_index
    try:
        store.warm_up()
        version = store.current_version(index)
    except StoreError as exc:
        raise _fail(f"the store failed: {exc}", FAILED) from exc
    if version is None:
        raise _fail(f"index {index!r} has no live version: run `sift index` first")
    return cfg, settings, store, cfg.data_dir or settings.data_dir, index, version


@suggest_app.command("build")
def build_cmd(config: Annotated[Path | None, typer.Option("--config", help="AppConfig YAML.")] = None) -> None:
    """Build the live version's corpus suggestions (a no-op when its file exists)."""
    from search.suggest.artifacts import corpus_for, corpus_path

    cfg, _, store, data_dir, _, version = _setup(config)
    t0 = time.perf_counter()
    corpus = corpus_for(store, version, data_dir, cfg.suggest.corpus)
    took = time.perf_counter() - t0
    typer.echo(f"{len(corpus)} phrases for {version} in {took:.2f} s: {corpus_path(data_dir, version)}")
    store.close()


@suggest_app.command("precompute")
def precompute_cmd(
    config: Annotated[Path | None, typer.Option("--config", help="AppConfig YAML.")] = None,
    log_top: Annotated[int, typer.Option("--log-top", min=0, help="Most searched prefixes of the log.")] = 300,
    corpus_top: Annotated[int, typer.Option("--corpus-top", min=0, help="Prefixes of the best phrases.")] = 300,
    batch: Annotated[int, typer.Option("--batch", min=1, max=64, help="Prefixes per LM generate call.")] = 16,
) -> None:
    """Complete the prefixes that matter with the suggestion LM (Ray Data), keep what passes the checks, save."""
    from logs.querylog import make_query_log
    from search.suggest.artifacts import corpus_for, lm_path
    from search.suggest.precomputed import precompute, prefixes_that_matter, ray_generate
    from search.suggest.result_check import store_has_results
    from search.suggest.suggester import Suggester

    cfg, settings, store, data_dir, index, version = _setup(config)
    sc = cfg.suggest
    check = store_has_results(
        store, index, sc.min_term_coverage, coverage_of=sc.term_coverage_of, min_shared=sc.lm_min_shared_results
    )
    suggester = Suggester(sc.model_copy(update={"prefetch_top": 0}), has_results=check, index=index)
    es_client = getattr(store, "client", None) if cfg.store == "es" else None
    qlog = make_query_log(cfg.query_log, cfg.store, data_dir, es_client)
    suggester.load(qlog.read(datetime.now(UTC) - timedelta(days=cfg.query_log.replay_days)))
    corpus = corpus_for(store, version, data_dir, sc.corpus)
    prefixes = prefixes_that_matter(suggester.prefixes, corpus, log_top, corpus_top)
    t0 = time.perf_counter()
    raw = ray_generate(prefixes, sc.lm, str(settings.registry_root().resolve()), batch)
    t1 = time.perf_counter()
    table = precompute(prefixes, raw, suggester.lm_candidates, version)
    table.save(lm_path(data_dir, version))
    typer.echo(
        f"{len(prefixes)} prefixes: LM {t1 - t0:.1f} s, checks {time.perf_counter() - t1:.1f} s; "
        f"{len(table)} with completions -> {lm_path(data_dir, version)}"
    )
    suggester.close(1)
    qlog.close()
    store.close()
