"""Figures that hold (training.gate_report): the twin rule, per-query wins/ties/losses on all, twin and no-twin
queries, and the split a promotion may score on (`sift models promote --dataset`: validation by default, test
refused unless --allow-test; a ranker without a counterfactual-gate pass refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.registry import LIVE, ModelCard, Registry
from sift.cli import app
from training.gate_report import jaccard, markdown, promotion_split, twin_queries, twin_report, words


def test_twin_rule_is_word_set_jaccard_at_least_half() -> None:
    assert words("Vitamin D, vitamin d!") == {"vitamin", "d"}
    assert jaccard(words("a b c"), words("a b d")) == pytest.approx(0.5)
    train = ["vitamin d lowers blood pressure", "aspirin prevents stroke"]
    got = twin_queries(
        {
            "exact-half": "vitamin d raises blood sugar",  # 3 shared of 7 distinct: 0.43 -> no
            "twin": "Vitamin D lowers the blood pressure",  # 5 of 6: twin
            "edge": "aspirin prevents",  # 2 of 3: twin
            "below": "aspirin causes ulcers",  # 1 of 5: no
            "none": "quantum chromodynamics",
        },
        train,
    )
    assert set(got) == {"twin", "edge"}
    assert twin_queries({"q": "a b"}, ["a b c d"]) == {"q": "a b c d"}  # exactly 0.5 counts
    assert twin_queries({"q": "a b"}, ["a b c d e"]) == {}  # 0.4 does not


def test_report_splits_wins_ties_losses() -> None:
    queries = {"t1": "vitamin d lowers blood pressure", "t2": "aspirin prevents stroke", "n1": "quantum", "n2": "x y"}
    training = ["vitamin d lowers blood pressure a lot", "aspirin prevents strokes"]  # t1 twin; t2: 2/4 -> twin
    base = {"t1": 0.5, "t2": 0.5, "n1": 0.5, "n2": 0.5}
    learnt = {"t1": 1.0, "t2": 0.5, "n1": 0.2, "n2": 0.5}
    rep = twin_report({"hybrid-linear": base, "hybrid-linear+ltr": learnt}, "hybrid-linear", queries, training, "log")
    assert (rep.twins, rep.no_twins) == (2, 2)
    s = rep.systems["hybrid-linear+ltr"]
    assert (s["all"].wins, s["all"].ties, s["all"].losses) == (1, 2, 1)
    assert (s["twin"].wins, s["twin"].ties, s["twin"].losses) == (1, 1, 0)
    assert (s["no-twin"].wins, s["no-twin"].ties, s["no-twin"].losses) == (0, 1, 1)
    assert s["twin"].delta == pytest.approx(0.25) and s["no-twin"].delta == pytest.approx(-0.15)
    assert rep.systems["hybrid-linear"]["all"].ties == 4
    table = markdown(rep)
    assert "| hybrid-linear+ltr (no-twin) | 2 | 0.3500 | -0.1500 | 0 / 1 / 1 |" in table
    assert "Jaccard >= 0.5" in table
    with pytest.raises(ValueError, match="baseline 'bm25' was not evaluated"):
        twin_report({"hybrid-linear": base}, "bm25", queries, training, "log")


def _beir(root: Path, splits: tuple[str, ...]) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("")
    for s in splits:
        (root / "qrels" / f"{s}.tsv").write_text("q\td\t1\n")
    return root


def test_promotion_split(tmp_path: Path) -> None:
    with_dev = _beir(tmp_path / "a", ("train", "dev", "test"))
    assert promotion_split(with_dev, "validation", allow_test=False) == "dev"
    assert promotion_split(with_dev, "train", allow_test=False) == "train"
    assert promotion_split(with_dev, "test", allow_test=True) == "test"
    with pytest.raises(ValueError, match="--allow-test"):
        promotion_split(with_dev, "test", allow_test=False)
    without = _beir(tmp_path / "b", ("train", "test"))
    with pytest.raises(ValueError, match=r"no validation split .* it has test, train"):
        promotion_split(without, "validation", allow_test=False)


def test_promote_refuses_test_split_and_ungated_ranker(tmp_path: Path) -> None:
    reg_dir = tmp_path / "registry"
    reg = Registry(reg_dir)
    reg.register(ModelCard(kind="reranker", version="r1", data_hash="x"), lambda d: None)
    reg.register(ModelCard(kind="ranker", version="k1", data_hash="x", metrics={"ips_passed": 0.0}), lambda d: None)
    beir = _beir(tmp_path / "beir", ("train", "test"))
    runner = CliRunner()
    promote = ["models", "promote", "reranker", "r1", "--dataset", str(beir), "--registry", str(reg_dir)]
    res = runner.invoke(app, [*promote, "--split", "test"])
    assert res.exit_code == 2 and "--allow-test" in res.output and "nothing is chosen on a test split" in res.output
    res = runner.invoke(app, promote)
    assert res.exit_code == 2 and "no validation split" in res.output
    res = runner.invoke(app, ["models", "promote", "ranker", "k1", "--registry", str(reg_dir)])
    assert res.exit_code == 1 and "no pass of the counterfactual gate" in res.output
    assert not (reg_dir / "reranker" / LIVE).exists() and not (reg_dir / "ranker" / LIVE).exists()
