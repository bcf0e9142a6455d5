"""`SuggestRuntime`: the query log and the suggester of one API process, fed by every impression."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from logs.querylog import QueryEvent, QueryLog, make_query_log
from search.stores.base import IndexStore
from search.suggest.artifacts import VersionArtifacts
from search.suggest.result_check import store_has_results
from search.suggest.schemas import CompleteFn
from search.suggest.suggester import Suggester
from search.typo_popularity import QueryWordPopularity
from serving.config import AppConfig

log = logging.getLogger("sift.serving")


class SuggestRuntime:
    """The query log and the suggester of one API process; `record` is the hook of /v1/search and /v1/suggest.

    `data_dir` is the resolved data directory (the JSONL query log lives under it unless configured)."""

    def __init__(self, config: AppConfig, store: IndexStore, complete: CompleteFn | None, data_dir: Path) -> None:
        es_client = getattr(store, "client", None) if config.store == "es" else None
        self.query_log: QueryLog = make_query_log(config.query_log, config.store, data_dir, es_client)
        # typo tolerance's query-log weights (search.typo_popularity), under the suggester's k-anonymity rule
        self.typo_popularity = QueryWordPopularity(config.suggest.min_sessions, config.search.default_index)
        self.suggester: Suggester | None = None
        self.artifacts: VersionArtifacts | None = None
        if not config.suggest.enabled:
            return
        index = config.suggest.check_index or config.search.default_index
        check = store_has_results(
            store,
            index,
            config.suggest.min_term_coverage,
            coverage_of=config.suggest.term_coverage_of,
            min_shared=config.suggest.lm_min_shared_results,
            typed_cache_ttl_s=config.suggest.results_cache_ttl_s,
        )
        self.suggester = Suggester(
            config.suggest, complete=complete, has_results=check, index=config.search.default_index
        )
        since = datetime.now(UTC) - timedelta(days=config.query_log.replay_days)
        try:
            n = self.suggester.load(self._tap(self.query_log.read(since)))
            log.info("suggester learnt %d searches from the query log", n)
        except Exception as exc:  # a log that cannot be read now must not keep the API down
            log.warning("query log replay failed, suggestions start empty: %s", exc)
        # the served version's corpus phrases and precomputed LM completions, loaded before the API answers
        self.artifacts = VersionArtifacts(self.suggester, store, config.search.default_index, data_dir)
        self.artifacts.start()
        self.suggester.start_prefetch()

    def record(self, event: QueryEvent) -> None:
        """Log an impression (search or suggest response); suggestions learn from the searches among them."""
        try:
            self.query_log.append(event)
        except Exception as exc:  # the search already succeeded; a lost log line must not fail it
            log.warning("query log append failed (%s)", type(exc).__name__)  # its text may quote the query
        self.typo_popularity.record(event)
        if self.suggester is not None:
            self.suggester.record(event)

    def _tap(self, events: Iterable[QueryEvent]) -> Iterator[QueryEvent]:
        """The replayed log, counted by typo tolerance's popularity on its way to the suggester."""
        for ev in events:
            self.typo_popularity.record(ev)
            yield ev

    def close(self, wait_s: float = 30.0) -> None:
        if self.artifacts is not None:
            self.artifacts.close()
        if self.suggester is not None:
            self.suggester.close(wait_s)
        self.query_log.close()
