"""The training jobs as library calls: the logs to sessions, a store and a registry opened from settings, the
ranker trained, gated and written, the neural models' examples. `sift clicks ...` and `sift train ...` are thin
layers over these, so a notebook gets the same result with the same calls:

    from logs.access import read_logs
    from logs.config import LogsConfig
    from training.jobs import fit_ranker, open_registry, training_sessions, write_ranker
    from training.ltr import RankerTrainConfig

    imps, clicks = read_logs(LogsConfig.load("configs/app.yaml"), index="scifact")
    sessions = training_sessions(imps, clicks, index="scifact")
    fit = fit_ranker(imps, sessions, RankerTrainConfig())
    if fit.refusal is None:
        write_ranker(fit, registry=open_registry())
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from models.registry import ModelCard, Registry
from search.settings import Settings
from search.stores.base import IndexStore
from training.click_data import DEFAULT_DEPTH, Session
from training.click_logs import sessions_from_logs
from training.click_models import ClickModel, CTRModel, DBNModel, PBMModel
from training.ltr import RankerData, RankerTrainConfig, gain, passes_gate, ranker_data, train_ranker
from training.neural_data import NeuralData

MIN_SESSIONS = 10


class TooFewSessions(ValueError):
    """The logs hold too few search impressions to learn from (or to fit a click model on)."""


def training_sessions(
    imps: Sequence[QueryEvent],
    clicks: Sequence[ClickRecord],
    index: str | None = None,
    depth: int = DEFAULT_DEPTH,
    minimum: int = MIN_SESSIONS,
) -> list[Session]:
    """The impressions joined with their clicks into sessions; TooFewSessions below `minimum`."""
    sessions = sessions_from_logs(imps, clicks, depth=depth, index=index)
    if len(sessions) < minimum:
        raise TooFewSessions(f"only {len(sessions)} search impression(s) in the logs: nothing to learn from")
    return sessions


def fit_click_model(name: Literal["ctr", "pbm", "dbn"], sessions: Sequence[Session]) -> ClickModel:
    """A click model (CTR, PBM or DBN) fitted on the sessions: position propensities and per-pair relevance."""
    model: ClickModel = {"ctr": CTRModel, "pbm": PBMModel, "dbn": DBNModel}[name]()
    model.fit(list(sessions))
    return model


def open_registry(root: Path | None = None, settings: Settings | None = None) -> Registry:
    """The model registry at `root`, else SIFT_REGISTRY_DIR, else <data_dir>/registry."""
    return Registry(root or (settings or Settings()).registry_root())


@contextmanager
def open_store(
    kind: Literal["embedded", "es"],
    data_dir: Path | None = None,
    elasticsearch_url: str | None = None,
    settings: Settings | None = None,
) -> Iterator[IndexStore]:
    """The index store a training job reads documents from (an app config's `store`, `data_dir` and
    `elasticsearch_url`), closed on exit."""
    from search.stores.factory import make_store

    settings = settings or Settings()
    if elasticsearch_url:
        settings = settings.model_copy(update={"elasticsearch_url": elasticsearch_url})
    store = make_store(kind, settings, data_dir=data_dir)
    try:
        yield store
    finally:
        store.close()


@dataclass
class RankerFit:
    """A cross-fitted ranker and its gate's verdict: `refusal` says why it must not be written (None: it may)."""

    booster: Any
    meta: Any  # ranking.ltr.RankerMeta
    data: RankerData
    cfg: RankerTrainConfig
    refusal: str | None


def fit_ranker(imps: Sequence[QueryEvent], sessions: Sequence[Session], cfg: RankerTrainConfig) -> RankerFit:
    """LightGBM lambdarank on the impressions' logged features, labelled by the click model, cross-fitted over
    folds of the queries, judged by the out-of-fold gate (`training.ltr.passes_gate`). Impressions without
    features (imported ones) need `training.feature_replay` first. ValueError when there is nothing to fit."""
    data, _ = ranker_data(imps, sessions, cfg)
    booster, meta = train_ranker(data, cfg)
    refusal = None
    if not passes_gate(meta, cfg):
        lcb = meta.metrics.get("heldout_gain_lcb")
        refusal = (
            f"out of fold the learnt order gains {gain(meta):+.4f} nDCG@10 over the served order "
            f"({cfg.confidence:.0%} lower bound {lcb:+.4f}); it needs >= {cfg.min_gain} with a bound above 0"
        )
    return RankerFit(booster, meta, data, cfg, refusal)


def write_ranker(fit: RankerFit, *, registry: Registry | None = None, out: Path | None = None) -> Path:
    """Write a ranker the gate let through: into `out` (a folder, served with `ranker: {model: out}`), else as a
    new `ranker` version of `registry` (made live by `sift models promote`). ValueError for a refused fit;
    RegistryError from the registry."""
    from ranking.ltr import save_ranker

    if fit.refusal is not None:
        raise ValueError(f"the gate refused this ranker: {fit.refusal}")
    if out is not None:
        return save_ranker(fit.booster, fit.meta, out)
    if registry is None:
        raise ValueError("write_ranker needs a registry or an out folder")
    card = ModelCard(
        kind="ranker", version=fit.meta.version, data_hash=fit.meta.data_hash, metrics=fit.meta.metrics,
        config={"train": fit.cfg.model_dump(), "params": fit.meta.params},
        notes="LightGBM LambdaMART on logged features (`sift train ranker`).",
    )  # fmt: skip

    def write(folder: Path) -> None:
        save_ranker(fit.booster, fit.meta, folder)

    return registry.register(card, write)


def neural_data(
    imps: Sequence[QueryEvent], sessions: Sequence[Session], store: IndexStore, index: str, shuffle_seed: int | None
) -> NeuralData:
    """The encoder's and reranker's examples from the logs, documents read
    from `index`; `shuffle_seed` swaps clicked documents between queries (a deliberately worse model, to show the
    gate refuses it). IndexNotFound / StoreError from the store, ValueError when nothing is left."""
    from training.neural_data import (
        NeuralDataConfig,
        build_neural_data,
        data_hash,
        fused_ranks,
        shuffled,
        store_texts,
    )

    cfg = NeuralDataConfig()
    data = build_neural_data(sessions, store_texts(store, index, cfg.max_chars), cfg, fused_ranks(imps))
    if shuffle_seed is not None:
        data.examples = shuffled(data.examples, shuffle_seed)
        data.data_hash = data_hash(data.examples, data.texts)
        data.stats["shuffled_labels"] = 1
    return data
