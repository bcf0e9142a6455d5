"""`sift eval-suggest`'s measurement (training/suggest_eval.py) on a tiny BEIR folder: the prefix index learns the
"train" queries, and a test query whose start was logged gets the logged query as its top suggestion."""

from __future__ import annotations

import json
from pathlib import Path

from search.suggest.lm_completer import LMCompleterConfig
from training.suggest_eval import prefixes_of, run_eval_suggest


def _beir(root: Path) -> Path:
    docs = {
        "d1": "Vitamin D deficiency raises the risk of bone fractures in older adults.",
        "d2": "Protein folding kinetics depend on chaperones in the cell.",
        "d3": "Smoking raises lung cancer risk.",
        "d4": "Bone density and calcium intake in older adults.",
    }
    root.mkdir()
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs.items())
    )
    train = {"t1": "vitamin d deficiency and bone fractures", "t2": "protein folding chaperones"}
    test = {"q1": "vitamin d deficiency in the elderly", "q2": "lung cancer and smoking"}
    for name, queries in (("queries_train.jsonl", train), ("queries.jsonl", test)):
        (root / name).write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return root


def test_the_blend_is_scored_against_the_bare_prefix_and_by_source(tmp_path: Path) -> None:
    report = run_eval_suggest(_beir(tmp_path / "beir"), tmp_path / "data", LMCompleterConfig(enabled=False), index="t")
    assert report["test_queries"] == 2 and report["log_learnt"] == 2
    blend = report["systems"]["blend"]
    # "vitamin", "vitamin d", "vitamin d deficiency" complete to the logged query; nothing logged starts "lung"
    assert blend["1"]["coverage"] == 0.5 and blend["all"]["prefixes"] == 6
    assert set(report["blend_by_source"]) == {"log"} and report["blend_by_source"]["log"]["prefixes"] == 3
    log_rows = report["blend_by_source"]["log"]
    assert log_rows["ndcg10_top_suggestion"] >= log_rows["ndcg10_bare_prefix"]  # the logged query finds d1 first
    assert report["lm_min_shared_results"] == 5 and report["term_coverage_of"] == "added"


def test_lm_lines_fill_the_gaps_of_the_log_and_are_reported_as_lm(tmp_path: Path) -> None:
    """The LM's completions (here read from the evaluation's completion cache, so no model loads) cover prefixes
    the log cannot, and the report says how their searches compare with the bare prefix."""
    beir = _beir(tmp_path / "beir")
    cfg = LMCompleterConfig()
    lines = {"lung": "lung cancer risk", "lung cancer": "lung cancer risk and smoking"}
    typed = {
        p
        for q in ("vitamin d deficiency in the elderly", "lung cancer and smoking")
        for p in prefixes_of(q, (1, 2, 3)).values()
    }
    cache = tmp_path / "lm.json"
    completions = {p: [{"text": lines[p], "score": 0.5}] if p in lines else [] for p in typed}
    cache.write_text(json.dumps({"config": cfg.model_dump(mode="json"), "completions": completions}))
    report = run_eval_suggest(beir, tmp_path / "data", cfg, index="t", lm_cache=cache)
    assert report["systems"]["blend"]["all"]["coverage"] == round(5 / 6, 4)  # 3 log + 2 lm; "lung cancer and": none
    lm = report["blend_by_source"]["lm"]
    assert lm["prefixes"] == 2 and lm["ndcg10_top_suggestion"] == 1.0  # both find d3 first
