"""The counterfactual gate (training.gate) on synthetic logs whose users have a known position bias: a ranker that
only reproduces the served order (what raw, position-biased clicks teach) or reverses it is refused; one that
knows the relevance the clicks hide passes, on adjacent-swap and on shuffled exploration alike."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from ranking.exploration import ExplorationConfig, explore_page
from ranking.features import FEATURES
from search.text import normalize_query
from training.gate import GateConfig, first_per_client, ips_gate, swap_page_gain

N_QUERIES, PAGE = 40, 10
# The live order puts a fairly attractive document first and the relevant one second: relevance per live rank.
RHO = [0.5, 0.7] + [0.05] * (PAGE - 2)


def _logs(mode: str, pages: int, rate: float, seed: int = 0) -> tuple[list[QueryEvent], list[ClickRecord]]:
    """Pages of the live order (explored at `rate`), clicks of position-biased users (examine rank r: 1/r)."""
    rng = np.random.default_rng(seed)
    cfg = ExplorationConfig(rate=rate, top_k=PAGE, mode=mode)  # type: ignore[arg-type]
    imps, clicks = [], []
    now = datetime.now(UTC)
    for i in range(pages):
        q = f"query {i % N_QUERIES}"
        live = [f"q{i % N_QUERIES}-live{r}" for r in range(PAGE)]
        shown, explored, swapped = explore_page(live, cfg, f"s{i}\x1f{q}")
        rho = {d: RHO[r] for r, d in enumerate(live)}
        feats: dict[str, list[float | None]] = {}
        for r, d in enumerate(live):
            row: list[float | None] = [None] * len(FEATURES)
            row[FEATURES.index("fused_rank")] = float(r + 1)
            feats[d] = row
        qid = f"imp-{i}"
        imps.append(QueryEvent(query=q, query_id=qid, shown=shown, offset=0, explored=explored, swapped=swapped,
                               features=feats, ts=now))  # fmt: skip
        for r, d in enumerate(shown):
            if rng.random() < (1.0 / (r + 1)) * rho[d]:
                clicks.append(
                    ClickRecord(event_id=f"{qid}-{r}", type="click", event_name="c", query_id=qid, object_ids=[d],
                                positions=[r + 1], ts=now, received_at=now, query=q)
                )  # fmt: skip
    return imps, clicks


def _scores(imps: list[QueryEvent], by: dict[int, float]) -> dict[tuple[str, str], float]:
    """A score per (query, doc) from the doc's live rank (0-based) through `by`."""
    return {(normalize_query(imp.query), d): by[int(d.rsplit("live", 1)[1])] for imp in imps for d in imp.shown or []}


def _raw_ctr(imps: list[QueryEvent], clicks: list[ClickRecord]) -> dict[tuple[str, str], float]:
    """What a ranker learns from raw clicks on all pages: click-through rate per (query, doc), position bias in."""
    shown: Counter[tuple[str, str]] = Counter()
    clicked: Counter[tuple[str, str]] = Counter()
    by_id = {imp.query_id: imp for imp in imps}
    for imp in imps:
        for d in imp.shown or []:
            shown[(normalize_query(imp.query), d)] += 1
    for c in clicks:
        clicked[(normalize_query(by_id[c.query_id].query), c.object_ids[0])] += 1
    return {k: clicked[k] / n for k, n in shown.items()}


def _mean_examination(imps: list[QueryEvent]) -> dict[tuple[str, str], float]:
    total: dict[tuple[str, str], list[float]] = {}
    for imp in imps:
        for r, d in enumerate(imp.shown or []):
            total.setdefault((normalize_query(imp.query), d), []).append(1.0 / (r + 1))
    return {k: float(np.mean(v)) for k, v in total.items()}


@pytest.mark.parametrize(("mode", "rate", "pages"), [("adjacent_swap", 0.3, 6000), ("shuffle", 0.3, 3000)])
def test_position_bias_refused_relevance_passes(mode: str, rate: float, pages: int) -> None:
    imps, clicks = _logs(mode, pages, rate)
    cfg = GateConfig(top_k=PAGE)
    better = ips_gate(imps, clicks, _scores(imps, {r: RHO[r] for r in range(PAGE)}), cfg)
    assert better.passed, better.reason
    assert better.gain > 0 and better.lcb > 0 and better.judged_pages >= cfg.min_pages

    # Raw click-through rates: rank 1 (0.5 x 1) beats the relevant rank 2 (0.7 x 1/2): the live order back,
    # up to noise among the equally irrelevant lower ranks.
    # (Under 30% full shuffles raw click-through rates are partly debiased already and do find the relevant
    # document: no longer a position-only ranker, so only the swap logs check this one.)
    if mode == "adjacent_swap":
        biased = ips_gate(imps, clicks, _raw_ctr(imps, clicks), cfg)
        assert not biased.passed
        assert biased.judged_pages < cfg.min_pages or biased.lcb <= 0, biased

    # A ranker that learnt nothing but position: the mean examination (1/rank) of where each document was shown.
    where = _mean_examination(imps)
    position = ips_gate(imps, clicks, where, cfg)
    assert not position.passed, position.reason

    reverse = ips_gate(imps, clicks, _scores(imps, {r: float(r) for r in range(PAGE)}), cfg)
    assert not reverse.passed and reverse.gain < 0, reverse.reason
    assert "lower bound" in reverse.reason

    same = ips_gate(imps, clicks, _scores(imps, {r: -float(r) for r in range(PAGE)}), cfg)
    assert not same.passed and same.judged_pages == 0 and "changes the live order on 0" in same.reason


def test_unexplored_pages_are_never_read() -> None:
    """With no exploration there is no evidence, whatever the clicks say: every candidate is refused."""
    imps, clicks = _logs("adjacent_swap", 2000, 0.0)
    res = ips_gate(imps, clicks, _scores(imps, {r: RHO[r] for r in range(PAGE)}), GateConfig(top_k=PAGE))
    assert not res.passed and res.explored_pages == 0


def test_swap_page_weights() -> None:
    """A swap at the disagreed pair counts its clicks at 1/p_swap; a swap elsewhere subtracts them at 1/p_intact;
    a swap touching the pair says nothing."""
    shown = ["b", "a", "c", "d"]  # live order a, b, c, d with the pair (1, 2) swapped
    scores = {("q", "a"): 0.0, ("q", "b"): 1.0, ("q", "c"): -1.0, ("q", "d"): -2.0}  # prefers b over a only
    gain, disagreed = swap_page_gain(shown, [1, 2], {1}, "q", scores, top_k=10)
    assert disagreed and gain == pytest.approx(3.0)  # one click in the pair, p_swap = 1/3
    live = ["a", "b", "d", "c"]  # swapped at (3, 4): pair (1, 2) intact, 1 of 3 pairs leaves it so
    gain, _ = swap_page_gain(live, [3, 4], {2}, "q", scores, top_k=10)
    assert gain == pytest.approx(-3.0)
    gain, disagreed = swap_page_gain(["a", "c", "b", "d"], [2, 3], {1, 3}, "q", scores, top_k=10)
    assert disagreed and gain == 0.0


def test_swap_drawn_from_a_list_longer_than_the_page() -> None:
    """With a learnt ranker live the swap is drawn among top_k ranks of a list longer than a short page: the
    propensity is 1/(top_k-1), and a swap below the page leaves the shown pairs intact (the live order's clicks
    count against the candidate instead of the page being dropped, which favoured it)."""
    scores = {("q", "a"): 0.0, ("q", "b"): 1.0, ("q", "c"): -1.0, ("q", "d"): -2.0}  # prefers b over a only
    gain, _ = swap_page_gain(["b", "a", "c", "d"], [1, 2], {1}, "q", scores, top_k=10, listed=10)
    assert gain == pytest.approx(9.0)  # p_swap = 1/9, not 1/3
    gain, disagreed = swap_page_gain(["a", "b", "c", "d"], [6, 7], {2}, "q", scores, top_k=10, listed=10)
    assert disagreed and gain == pytest.approx(-9.0 / 7.0)  # pair (1, 2) intact; 7 of 9 swaps leave it so
    gain, _ = swap_page_gain(["a", "b", "c", "x"], [4, 5], {1}, "q", scores, top_k=10, listed=10)
    assert gain == pytest.approx(-9.0 / 7.0)  # the swap moved rank 4 off the page; pair (1, 2) still intact


def _shuffled(stages: str, live_first: bool, n: int = 600, seed: int = 1) -> tuple[list[QueryEvent], list[ClickRecord]]:
    """Shuffled pages of a list whose fused order is the reverse of relevance; with `live_first` a second stage
    (a learnt ranker, or a cross-encoder whose scores are logged) had put it in relevance order first."""
    rng = np.random.default_rng(seed)
    cfg = ExplorationConfig(rate=1.0, top_k=PAGE, mode="shuffle")
    now = datetime.now(UTC)
    imps, clicks = [], []
    for i in range(n):
        q = f"query {i % N_QUERIES}"
        docs = [f"q{i % N_QUERIES}-live{r}" for r in range(PAGE)]  # relevance order
        fused = docs[::-1]
        live = docs if live_first else fused
        shown, explored, _ = explore_page(live, cfg, f"s{i}\x1f{q}")
        feats: dict[str, list[float | None]] = {}
        for r, d in enumerate(fused):
            row: list[float | None] = [None] * len(FEATURES)
            row[FEATURES.index("fused_rank")] = float(r + 1)
            if "rerank" in stages:
                row[FEATURES.index("rerank_score")] = -float(docs.index(d))
            feats[d] = row
        qid = f"imp-{i}"
        imps.append(QueryEvent(query=q, query_id=qid, shown=shown, offset=0, explored=explored, features=feats,
                               versions={"stages": stages}, ts=now))  # fmt: skip
        for r, d in enumerate(shown):
            if rng.random() < (1.0 / (r + 1)) * (0.9 if docs.index(d) == 0 else 0.05):
                clicks.append(
                    ClickRecord(event_id=f"{qid}-{r}", type="click", event_name="c", query_id=qid, object_ids=[d],
                                positions=[r + 1], ts=now, received_at=now, query=q)
                )  # fmt: skip
    return imps, clicks


def test_shuffle_with_a_learnt_ranker_live_is_not_judged_against_the_fused_order() -> None:
    """A candidate that only repeats the live learnt ranker gains nothing over it; judged against the fused order
    (the logged features' rank) it looked like a large gain and passed. Those pages are left out, and counted."""
    imps, clicks = _shuffled("encode,hybrid,ltr,explore", live_first=True)
    same_as_live = _scores(imps, {r: -float(r) for r in range(PAGE)})
    res = ips_gate(imps, clicks, same_as_live, GateConfig(top_k=PAGE))
    assert not res.passed and res.unknown_live_pages == len(imps) and res.judged_pages == 0
    assert "live order unknown" in res.reason
    # without a learnt ranker the same pages are judged against the fused order, where that candidate does gain
    imps, clicks = _shuffled("encode,hybrid,explore", live_first=False)
    res = ips_gate(imps, clicks, _scores(imps, {r: -float(r) for r in range(PAGE)}), GateConfig(top_k=PAGE))
    assert res.passed and res.unknown_live_pages == 0, res.reason


def test_shuffle_after_a_cross_encoder_uses_its_logged_scores() -> None:
    """The cross-encoder's order (its logged `rerank_score`), not the fused rank, is the live order: a candidate
    equal to it changes nothing."""
    imps, clicks = _shuffled("encode,hybrid,rerank,explore", live_first=True)
    res = ips_gate(imps, clicks, _scores(imps, {r: -float(r) for r in range(PAGE)}), GateConfig(top_k=PAGE))
    assert res.judged_pages == 0 and res.shuffle_pages == len(imps) and not res.passed


def test_repeats_keep_the_first_page_not_the_clicked_one() -> None:
    """A client's repeated explored searches of one query count once, by the first page, whatever its clicks:
    keeping the first clicked one (what training's one_per_client does) picks draws by their outcome, and the
    pairs the candidate flips then look better than the log says."""
    now = datetime.now(UTC)
    scores = {("q", "a"): 0.0, ("q", "b"): 1.0, ("q", "c"): -1.0, ("q", "d"): -2.0}  # prefers b over a only
    first = QueryEvent(query="q", query_id="i1", client="u", shown=["a", "b", "d", "c"], offset=0, explored=True,
                       swapped=[3, 4], ts=now)  # fmt: skip
    again = QueryEvent(query="Q", query_id="i2", client="u", shown=["b", "a", "c", "d"], offset=0, explored=True,
                       swapped=[1, 2], ts=now)  # fmt: skip
    other = first.model_copy(update={"client": "v", "query_id": "i3"})
    assert first_per_client([first, again, other]) == [first, other]
    click = ClickRecord(event_id="c1", type="click", event_name="c", query_id="i2", object_ids=["b"], positions=[1],
                        ts=now, received_at=now, query="Q")  # fmt: skip
    res = ips_gate([first, again], [click], scores, GateConfig(top_k=4, min_pages=1))
    assert res.explored_pages == 1 and res.gain == 0.0  # the unclicked first page, not +3 from the clicked repeat
