"""Native Sift logs for the UBI and feature-replay tests: a small index, the real service in-process with
`log_features` on, and simulated users clicking (as tests/test_ltr.py makes them)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

INDEX = "ubi-docs"
TOPICS = ["protein folding", "insulin resistance", "vitamin d", "zebrafish heart", "sleep memory", "gut flora"]
SPECS = Path(__file__).parents[1].parent / "shared" / "specs" / "ubi-1.3.0"


def app_dict(data_dir: Path, models: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """BM25 alone, or with `models` (embedder, cross-encoder folders) hybrid linear fusion and a reranker."""
    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}, "exploration": {"rate": 1.0}},
        "reranker": {"model": None},
        "ranker": {"model": None},
        "suggest": {"enabled": False},
        "summarizer": None,
    }
    if models is not None:
        cfg["search"]["retrieval"] = {"mode": "hybrid", "fusion": "linear"}
        cfg["embedder"] = {"model": str(models[0]), "device": "cpu"}
        cfg["reranker"] = {"model": str(models[1]), "device": "cpu", "top_n": 5, "deadline_ms": 600_000}
    return cfg


def write_config(data_dir: Path, models: tuple[Path, Path] | None = None) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "app.yaml"
    path.write_text(yaml.safe_dump(app_dict(data_dir, models)))
    return path


def build_index(data_dir: Path, embedder: Any = None) -> None:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore

    corpus = data_dir / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(120):
            t = TOPICS[i % len(TOPICS)]
            title = f"{t} trial {i}" if i % 4 == 0 else f"notes {i}"
            f.write(json.dumps({"_id": f"d{i}", "title": title, "text": f"{t} results {i} " * (1 + i % 3)}) + "\n")
    cfg = IndexingConfig(embed=embedder is not None, progress=False, dead_letter_dir=data_dir / "dead")
    IndexingPipeline(EmbeddedStore(data_dir / "indices"), embedder, cfg).build(corpus, INDEX)


def native_logs(
    data_dir: Path, sessions: int = 300, models: tuple[Path, Path] | None = None, embedder: Any = None
) -> Path:
    """An index under `data_dir` and `sessions` simulated searches with clicks in its logs; the app config.
    With `models` and `embedder` (the same embedder, loaded) the searches are hybrid and reranked."""
    from search.settings import Settings
    from serving.config import AppConfig
    from serving.local import local_backend
    from sift.clicks_cli import _backend_search
    from training.click_simulator import InProcessClient, SimulatorConfig, simulate
    from training.click_users import UserConfig

    config = write_config(data_dir, models)
    build_index(data_dir, embedder)
    queries = {f"q{j}": t for j, t in enumerate(TOPICS)}
    qrels = {f"q{j}": {f"d{i}": 1 for i in range(j, 120, 24)} for j in range(len(TOPICS))}
    backend = local_backend(AppConfig.model_validate(app_dict(data_dir, models)), Settings())
    sim = SimulatorConfig(
        sessions=sessions, seed=1, progress=False, user=UserConfig(eta=0.8, attractiveness=(0.05, 0.9))
    )

    async def go() -> None:
        client = InProcessClient(_backend_search(backend), backend.events)
        try:
            await simulate(client, queries, qrels, sim)
        finally:
            await client.aclose()

    try:
        asyncio.run(go())
    finally:
        backend.suggest.close()
        backend.store.close()
    return config


def training_rows(config: Path) -> tuple[Any, list[Any]]:
    """What `sift train ranker` builds before fitting: rows (features, labels, query groups) and sessions."""
    from sift.clicks_cli import read_logs
    from training.click_logs import sessions_from_logs
    from training.ltr import RankerTrainConfig, ranker_data

    imps, clicks = read_logs(config)
    sessions = sessions_from_logs(imps, clicks)
    data, _ = ranker_data(imps, sessions, RankerTrainConfig())
    return data, sessions


def same_rows(a: Any, b: Any) -> bool:
    every = np.arange(len(a.y))
    return (
        a.x.shape == b.x.shape
        and bool(np.array_equal(a.x, b.x, equal_nan=True))
        and bool(np.array_equal(a.y, b.y))
        and a.queries == b.queries
        and a.docs == b.docs
        and a.groups(every) == b.groups(np.arange(len(b.y)))
        and a.priors.keys() == b.priors.keys()
        and all(math.isclose(a.priors[d], b.priors[d]) for d in a.priors)
    )
