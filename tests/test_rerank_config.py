"""The app YAML's `reranker:` section is what the served search reads: `top_n` results get rerank scores."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from indexing.pipeline import IndexingConfig, IndexingPipeline
from search.stores.embedded import EmbeddedStore

INDEX = "rerank-docs"


def test_yaml_reranker_top_n_takes_effect(tmp_path: Path, tiny_reranker_path: Path) -> None:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "title": f"Loops note {i}", "text": f"The for loop iterates, example {i}."})
            + "\n"
            for i in range(12)
        )
    )
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=tmp_path / "dead")
    assert IndexingPipeline(EmbeddedStore(tmp_path / "data" / "indices"), None, cfg).build(src, INDEX).indexed == 12
    path = tmp_path / "app.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": "embedded",
                "data_dir": str(tmp_path / "data"),
                "search": {"default_index": INDEX, "retrieval": {"mode": "bm25"}},
                "reranker": {"model": str(tiny_reranker_path), "device": "cpu", "top_n": 3},
                "suggest": {"lm": {"enabled": False}, "prefetch_top": 0},
                "summarizer": None,
            }
        )
    )
    config = AppConfig.load(path)
    assert config.reranker.top_n == 3
    backend = local_backend(config, Settings())
    try:
        with TestClient(create_api(backend, backend.metrics)) as client:
            r = client.post("/v1/search", json={"query": "for loop iterates example", "limit": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reranked"] is True, body["rerank_note"]
        assert len(body["results"]) == 10
        scored = [x for x in body["results"] if x["explanation"]["rerank_score"] is not None]
        assert len(scored) == 3
        assert [x["id"] for x in body["results"][:3]] == [x["id"] for x in scored]  # the reranked head leads
    finally:
        backend.suggest.close()
        backend.store.close()


def test_int8_reranker_scores_like_fp32(tiny_reranker_path: Path) -> None:
    """The served default quantizes the linear layers on CPU and its scores stay close to fp32's (whether a real
    reranker keeps its quality is measured by bench/rerank.py: nDCG@10 of both)."""
    import numpy as np

    from ranking.rerank import CrossEncoderReranker, RerankerConfig

    texts = [f"document {i} about loops files and classes number {i * 7}" for i in range(12)]
    fp32 = CrossEncoderReranker(RerankerConfig(model=str(tiny_reranker_path), device="cpu", quantize="none"))
    int8 = CrossEncoderReranker(RerankerConfig(model=str(tiny_reranker_path), device="cpu"))
    assert int8.config.quantize == "int8" and int8.config.max_length == 128
    a, b = np.array(fp32.rerank("loops files", texts)), np.array(int8.rerank("loops files", texts))
    layer = int8._model.model.bert.encoder.layer[0].attention.self.query
    assert (
        "quantized" in type(layer).__module__
        and "quantized" not in type(fp32._model.model.bert.pooler.dense).__module__
    )
    assert np.abs(a - b).max() < 0.01
