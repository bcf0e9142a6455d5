"""`sift train lm` end to end, without the CLI: logs → examples → Ray Train → a registered `lm` version.

Split from training/lm_train.py so the trainer stays about training: this module joins it to the app config
(the suggester's few-shot prompt and blocklist, so the tuned model is served unchanged) and to a Ray session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from models.ray_session import shutdown_ray
from search.configfile import ConfigError, load_config
from training.lm_data import LMData, LMDataConfig, TextFetch, build_lm_data
from training.lm_train import LMTrainConfig, TrainedLM, train_lm


class LMJobConfig(BaseModel):
    """`sift train lm --lm-config FILE`: every data and training setting; command-line flags override it."""

    model_config = ConfigDict(extra="forbid")

    data: LMDataConfig = Field(default_factory=LMDataConfig, description="Which examples, privacy, the split.")
    train: LMTrainConfig = Field(default_factory=LMTrainConfig, description="Model, LoRA or full, optimiser, Ray.")


def job_config(path: Path | None, data: dict[str, Any], train: dict[str, Any]) -> LMJobConfig:
    """The file's settings (or the defaults) with every flag that was given (not None) on top; ConfigError names
    the bad field."""
    job = load_config(path, LMJobConfig) if path is not None else LMJobConfig()
    merged = {
        "data": {**job.data.model_dump(exclude_unset=True), **{k: v for k, v in data.items() if v is not None}},
        "train": {**job.train.model_dump(exclude_unset=True), **{k: v for k, v in train.items() if v is not None}},
    }
    try:
        return LMJobConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


def suggest_blocklist(suggest: Any) -> list[str]:
    """The served suggester's blocklist (its file too): what it will never show is never learnt either."""
    entries = list(suggest.blocklist)
    if suggest.blocklist_file is not None:
        entries += [ln.strip() for ln in Path(suggest.blocklist_file).read_text().splitlines() if ln.strip()]
    return entries


@contextmanager
def ray_session(cpus: float | None = None) -> Iterator[None]:
    """Joins the running Ray (a RayJob sets RAY_ADDRESS) or starts a local one, shut down on the way out."""
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        n = None if cpus is None else max(1, round(cpus))
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        shutdown_ray()


def lm_examples(
    imps: Sequence[QueryEvent],
    clicks: Sequence[ClickRecord],
    data_cfg: LMDataConfig,
    suggest: Any,
    fetch: TextFetch | None = None,
) -> LMData:
    """Examples in the served suggester's prompt format, filtered by its blocklist as well as the default one."""
    cfg = data_cfg.model_copy(update={"blocklist": [*data_cfg.blocklist, *suggest_blocklist(suggest)]})
    return build_lm_data(imps, clicks, cfg, fetch=fetch, completer=suggest.lm)


def doc_fetch(store: Any, index: str, data_cfg: LMDataConfig) -> TextFetch | None:
    """doc2query's clicked documents as "title line, newline, body", as much of each as `doc_part` reads (the
    opening, or all of it when the end is read); None for the other tasks."""
    from training.neural_data import store_texts

    if data_cfg.task != "doc2query":
        return None
    return store_texts(store, index, 4 * data_cfg.doc_chars if data_cfg.doc_part == "head" else 10**6, title_line=True)


def run_lm_training(data: LMData, train_cfg: LMTrainConfig, registry: Any) -> TrainedLM:
    """Train on Ray (joining a cluster when there is one) and register the result."""
    cpus = None if train_cfg.use_gpu else train_cfg.cpus_per_worker * train_cfg.workers + 1
    with ray_session(cpus):
        return train_lm(data, train_cfg, registry)
