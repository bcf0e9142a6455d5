"""Opening the logs a LogsConfig names, for jobs that read or append outside the server: training, exports,
imports, a notebook. The server opens its own (serving/runtime.py), with its flush threads and caches.

    from logs.access import read_logs
    from logs.config import LogsConfig

    impressions, clicks = read_logs(LogsConfig.load("configs/app.yaml"), index="scifact")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from logs.clicklog import ClickLog, ClickRecord, make_click_log
from logs.config import LogsConfig
from logs.querylog import QueryEvent, QueryLog, make_query_log
from search.settings import Settings


class NoClickLog(ValueError):
    """The configuration keeps no click log (`click_log: {backend: none}`): nothing to read or append to."""


def logs_settings(cfg: LogsConfig, settings: Settings | None = None) -> Settings:
    """The environment's settings with the config's cluster URL, if it names one."""
    settings = settings or Settings()
    if cfg.elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": cfg.elasticsearch_url})
    return settings


def logs_data_dir(cfg: LogsConfig, settings: Settings | None = None) -> Path:
    """Where the JSONL logs (and an import's dead letters) live: the config's data_dir, else SIFT_DATA_DIR."""
    return cfg.data_dir or (settings or Settings()).data_dir


@contextmanager
def open_logs(cfg: LogsConfig, settings: Settings | None = None) -> Iterator[tuple[QueryLog, ClickLog]]:
    """The query log and click log of `cfg` (JSONL files or Elasticsearch indices), closed on exit. An
    Elasticsearch query log is refreshed first, so a reader sees what was acknowledged, not only what the
    periodic refresh has shown. NoClickLog when the config keeps none."""
    from search.stores.factory import make_store

    settings = logs_settings(cfg, settings)
    data_dir = logs_data_dir(cfg, settings)
    store = make_store(cfg.store, settings, data_dir=cfg.data_dir) if cfg.store == "es" else None
    client = getattr(store, "client", None)
    qlog: QueryLog | None = None
    clog: ClickLog | None = None
    try:
        qlog = make_query_log(cfg.query_log, cfg.store, data_dir, client)
        clog = make_click_log(cfg.click_log, cfg.store, data_dir, client)
        if clog is None:
            raise NoClickLog("click_log backend is none: this config keeps no click log")
        refresh = getattr(qlog, "refresh", None)
        if refresh is not None:
            refresh()
        yield qlog, clog
    finally:
        if clog is not None:
            clog.close()
        if qlog is not None:
            qlog.close()
        if store is not None:
            store.close()


def read_logs(
    cfg: LogsConfig,
    index: str | None = None,
    since: datetime | None = None,
    settings: Settings | None = None,
) -> tuple[list[QueryEvent], list[ClickRecord]]:
    """The search impressions (of `index`, if given) and every click record, oldest first: what the click
    models, the ranker, the neural trainers and interleaving analysis learn from."""
    with open_logs(cfg, settings) as (qlog, clog):
        imps = [e for e in qlog.read(since) if e.type == "search" and (index is None or e.index == index)]
        return imps, list(clog.read(since))
