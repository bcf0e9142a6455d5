"""`sift eval-suggest`'s measurement (training/suggest_eval.py) on a tiny BEIR folder: the prefix index learns the
"train" queries, and a test query whose start was logged gets the logged query as its top suggestion."""

from __future__ import annotations

import json
from pathlib import Path

from search.suggest.lm_completer import LMCompleterConfig
from training.suggest_eval import run_eval_suggest


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
