"""QAC metrics (training/qac_eval.py): exact and partial matches, seen/unseen prefixes, near-twins."""

from __future__ import annotations

from training.qac_eval import Prefix, is_seen, near_twins, partial_match, qac_prefixes, qac_table, scores

TARGET = "vitamin d deficiency and bone fractures"


def test_partial_match_needs_a_whole_further_word_and_nothing_else() -> None:
    typed = "vitamin d def"
    assert partial_match("vitamin d deficiency", typed, TARGET)  # finishes the word being typed
    assert partial_match("vitamin d deficiency and bone", typed, TARGET)
    assert not partial_match("vitamin d defic", typed, TARGET)  # stops mid-word
    assert not partial_match("vitamin d deficiency in children", typed, TARGET)  # says what the target does not
    assert not partial_match("vitamin d def", typed, TARGET)  # adds nothing
    assert partial_match("Vitamin D deficiency", "vitamin d ", TARGET)  # normalised like the log


def test_scores_rank_the_target_and_the_first_partial_match() -> None:
    p = Prefix("q#5", "vitam", TARGET, seen=False)
    ranked = ["vitamins", "vitamin d deficiency", "x", "y", "z", TARGET]
    rr, prr, s5 = scores(ranked, p)
    assert rr == 1 / 6 and prr == 1 / 2 and s5 == 0.0
    assert scores([TARGET], p) == (1.0, 1.0, 1.0)
    assert scores([], p) == (0.0, 0.0, 0.0)


def test_prefixes_are_seeded_and_marked_seen_by_the_log() -> None:
    queries = {"a": TARGET, "b": "zebrafish heart regeneration"}
    log = ["vitamin d and calcium"]
    one = qac_prefixes(queries, log, per_query=3, seed=1)
    assert one == qac_prefixes(queries, log, per_query=3, seed=1)
    assert len(one) == 6 and all(TARGET.startswith(p.typed) or p.key.startswith("b") for p in one)
    for p in one:
        assert p.seen == any(q.startswith(p.typed) for q in log)
    assert is_seen("vitamin d a", sorted(log)) and not is_seen("vitamin d d", sorted(log))


def test_near_twins_catch_reworded_claims_only() -> None:
    test = {"t1": "Vitamin D deficiency increases bone fractures.", "t2": "Zebrafish regenerate heart tissue."}
    train = ["Vitamin D deficiency decreases bone fractures.", "Insulin resistance in mice."]
    twins = near_twins(test, train)
    assert set(twins) == {"t1"} and twins["t1"] >= 0.5


def test_table_splits_seen_and_unseen() -> None:
    prefixes = [Prefix("a#3", "vit", TARGET, True), Prefix("b#3", "zeb", "zebrafish heart", False)]
    table = qac_table({"s": {"a#3": [TARGET], "b#3": ["zebra"]}}, prefixes)
    assert table["s"]["seen"]["mrr10"] == 1.0 and table["s"]["unseen"]["mrr10"] == 0.0
    assert table["s"]["all"] == {"n": 2, "mrr10": 0.5, "pmrr10": 0.5, "success5": 0.5}
