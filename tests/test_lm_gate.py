"""The LM promotion gate (training/promotion.lm_evaluator): partial-match MRR@10 of completions of held-out
queries' prefixes; an LM that completes the log's queries is promoted, a worse one is refused and LIVE.json
does not change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.registry import ModelCard, Registry
from search.suggest.lm_completer import LMCompleterConfig
from tests.test_lm_hot_reload import _fitted
from training.promotion import lm_evaluator

QUERIES = ["protein folding in cells", "insulin resistance in mice", "zebrafish heart regeneration"]


@pytest.fixture(scope="module")
def gate_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Path]:
    from tests.tiny_lm import build_tiny_lm

    tmp = tmp_path_factory.mktemp("lm-gate")
    stock = build_tiny_lm(tmp / "stock", ["Search queries:\n- " + q for q in QUERIES])  # untrained weights
    reg = Registry(tmp / "registry")
    for version, src in (("good", _fitted(tmp / "good-src", QUERIES * 3)), ("bad", stock)):
        card = ModelCard(kind="lm", version=version, base_model="tiny", data_hash=version, config={"task": "suggest"})
        reg.register(card, lambda out, s=src: shutil.copytree(s, out, dirs_exist_ok=True))
    return reg, stock


def test_gate_promotes_the_better_lm_and_refuses_a_worse_one(gate_registry: tuple[Registry, Path]) -> None:
    reg, stock = gate_registry
    serve = LMCompleterConfig.model_validate({"lm": {"model": str(stock), "device": "cpu"}, "max_new_tokens": 16})
    evaluate, described = lm_evaluator(QUERIES, QUERIES, serve, n_prefixes=30)
    assert described["prefixes"] == 3
    good = evaluate(reg.path("lm", "good"))
    assert good > evaluate(None) + 0.1
    first = reg.promote("lm", "good", evaluate, 0.005, metric="partial_mrr@10")
    assert first.promoted and reg.live("lm") == "good", first.reason
    pointer = (reg.root / "lm" / "LIVE.json").read_bytes()
    worse = reg.promote("lm", "bad", evaluate, 0.005, metric="partial_mrr@10")
    assert not worse.promoted and "partial_mrr@10" in worse.reason
    assert (reg.root / "lm" / "LIVE.json").read_bytes() == pointer


def test_gate_needs_held_out_queries() -> None:
    with pytest.raises(ValueError, match="no held-out"):
        lm_evaluator([], ["a query"], LMCompleterConfig())
