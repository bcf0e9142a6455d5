"""The quality gate before the alias swap: a broken encoder's build is refused with both nDCG@10 figures, the
alias stays and the refused version is kept; a good build swaps. A small SciFact subset, the tiny embedder."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from indexing.gate import GateConfig, GateRefused, load_judgments, ndcg_at_10
from indexing.pipeline import IndexingConfig, IndexingError, IndexingPipeline
from models.embedder import Embedder
from search.stores.embedded import EmbeddedStore
from sift.cli import app
from tests.conftest import DATASETS

SCIFACT = DATASETS / "scifact"


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """15 SciFact test queries, their judged documents and 30 others; qrels and queries as `gate` reads them."""
    out = tmp_path_factory.mktemp("judged")
    qrels: dict[str, dict[str, int]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, g = line.split("\t")
        qrels.setdefault(q, {})[d] = int(g)
    qids = sorted(qrels)[:15]
    relevant = {d for q in qids for d in qrels[q]}
    docs = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").read_text().splitlines()]
    others = random.Random(7).sample([d for d in docs if d["_id"] not in relevant], 30)
    (out / "corpus").mkdir()
    with open(out / "corpus" / "corpus.jsonl", "w") as f:
        for d in [d for d in docs if d["_id"] in relevant] + others:
            f.write(json.dumps(d) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q in qids for d, g in qrels[q].items()]
    (out / "qrels.tsv").write_text("\n".join(lines) + "\n")
    queries = {json.loads(line)["_id"]: line for line in (SCIFACT / "queries.jsonl").read_text().splitlines()}
    (out / "queries.jsonl").write_text("\n".join(queries[q] for q in qids) + "\n")
    return out


@pytest.fixture(scope="module")
def broken_model(tiny_embedder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny embedder with every token's embedding made the same: a bad checkpoint that still loads."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_embedder_path), device="cpu")
    weights = model[0].auto_model.embeddings.word_embeddings.weight
    with torch.no_grad():
        weights[:] = weights[0].clone()
    out = tmp_path_factory.mktemp("broken") / "model"
    model.save(str(out))
    return out


class RandomVectors:
    """A broken encoder: the tiny embedder's tokenizer and size, random unit vectors for every text."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.model_id = inner, "random-vectors"
        self._rng = np.random.default_rng(0)

    def warm_up(self) -> None:
        self.inner.warm_up()

    @property
    def dims(self) -> int:
        return self.inner.dims

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        v = self._rng.normal(size=(len(texts), self.dims)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(tmp_path / "data")
    yield s
    s.close()


def config(tmp_path: Path, gate: GateConfig | None) -> IndexingConfig:
    return IndexingConfig(format="beir", max_chunks=1, progress=False, dead_letter_dir=tmp_path / "dead", gate=gate)


def test_ndcg_at_10_by_hand() -> None:
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}}
    run = {"q1": ["b", "x", "a"], "q2": []}
    dcg = 1 / np.log2(2) + 2 / np.log2(4)
    idcg = 2 / np.log2(2) + 1 / np.log2(3)
    assert ndcg_at_10(run, qrels) == pytest.approx((dcg / idcg + 0.0) / 2)
    assert ndcg_at_10({"q1": ["a", "b"], "q2": ["c"]}, qrels) == pytest.approx(1.0)


def test_judgments_skip_header_and_unjudged_queries(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text(
        '{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n{"id": "3", "text": "x"}\n'
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n2\td2\t0\n3 0 d3 2\n")
    queries, qrels = load_judgments(GateConfig(qrels=tmp_path / "qrels.tsv", queries=tmp_path / "q.jsonl"))
    assert queries == {"1": "one", "3": "x"} and qrels == {"1": {"d1": 1}, "3": {"d3": 2}}  # 2: no positive
    (tmp_path / "bad.tsv").write_text("1\td1\t1\n2\td2\tvery\n")
    with pytest.raises(IndexingError, match="very"):
        load_judgments(GateConfig(qrels=tmp_path / "bad.tsv", queries=tmp_path / "q.jsonl"))
    with pytest.raises(IndexingError, match="not found"):
        load_judgments(GateConfig(qrels=tmp_path / "none.tsv", queries=tmp_path / "q.jsonl"))
    with pytest.raises(ValueError, match="extra"):
        GateConfig(qrels=tmp_path / "qrels.tsv", queries=tmp_path / "q.jsonl", margin=0.1)  # type: ignore[call-arg]


def test_broken_encoder_refused_good_build_swaps(
    store: EmbeddedStore, tiny_embedder: Embedder, tiny_embedder_path: Path, judged: Path, tmp_path: Path
) -> None:
    gate = GateConfig(
        qrels=judged / "qrels.tsv", queries=judged / "queries.jsonl", mode="dense", live_model=str(tiny_embedder_path)
    )
    first = IndexingPipeline(store, tiny_embedder, config(tmp_path, gate)).build(judged / "corpus", "sf")
    assert first.alias_switched and first.gate is not None and first.gate.live is None  # nothing live to beat
    live_score = first.gate.new
    assert live_score > 0.1

    with pytest.raises(GateRefused) as refused:
        IndexingPipeline(store, RandomVectors(tiny_embedder), config(tmp_path, gate)).build(judged / "corpus", "sf")
    result = refused.value.result
    print(f"gate figures (dense): live {result.live:.4f}, random-vector build {result.new:.4f}")
    assert result.live == pytest.approx(live_score) and result.new < live_score - 0.05
    assert f"{result.new:.4f}" in str(refused.value) and f"{result.live:.4f}" in str(refused.value)
    assert store.current_version("sf") == first.version  # the alias stayed
    versions = {v.version: v for v in store.list_versions("sf")}
    assert versions[result.new_version].complete is False  # kept for inspection, never served
    assert versions[result.new_version].count == first.indexed

    # A good build (the same encoder: a data refresh) scores as the live one and swaps; the refused one is gone.
    good = IndexingPipeline(store, tiny_embedder, config(tmp_path, gate.model_copy(update={"live_model": None})))
    third = good.build(judged / "corpus", "sf")
    assert third.alias_switched and third.gate is not None
    assert third.gate.new == pytest.approx(third.gate.live, abs=1e-6)
    assert store.current_version("sf") == third.version
    assert result.new_version not in {v.version for v in store.list_versions("sf")}


def test_cli_gate_exit_code_and_figures(
    judged: Path, tiny_embedder_path: Path, broken_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SIFT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = tmp_path / "indexing.yaml"
    cfg.write_text(f"max_chunks: 1\nformat: beir\ndead_letter_dir: {tmp_path / 'dead'}\n")
    base = ["index", "--source", str(judged / "corpus"), "--index", "sfcli", "--config", str(cfg), "--no-progress"]
    gate = ["--gate-qrels", str(judged / "qrels.tsv"), "--gate-queries", str(judged / "queries.jsonl")]
    gate += ["--gate-mode", "dense", "--gate-max-drop", "0.01", "--quiet"]
    ok = CliRunner().invoke(app, [*base, "--model", str(tiny_embedder_path), *gate])
    assert ok.exit_code == 0, ok.output
    first = json.loads(ok.stdout)
    assert first["alias_switched"] and first["gate"]["live"] is None

    bad = CliRunner().invoke(
        app, [*base, "--model", str(broken_model), *gate, "--gate-live-model", str(tiny_embedder_path)]
    )
    assert bad.exit_code == 3, bad.output
    figures = json.loads(bad.stdout)
    assert figures["passed"] is False and figures["live"] == pytest.approx(first["gate"]["new"])
    assert figures["new"] < figures["live"] - 0.01
    assert f"new {figures['new']:.4f} vs live {figures['live']:.4f}" in bad.stderr
    store = EmbeddedStore(tmp_path / "data" / "indices")
    assert store.current_version("sfcli") == first["version"]

    wrong = CliRunner().invoke(app, [*base, "--model", str(tiny_embedder_path), "--gate-max-drop", "0.5"])
    assert wrong.exit_code == 2 and "need --gate-qrels" in wrong.stderr
