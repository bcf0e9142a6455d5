"""The realistic click profile (training/click_profiles.py): Zipf query frequencies, gentle adjacent-swap
exploration logged by the served search, snippet attractiveness, abandonment, reproducibility, and the ideal
profile left as it was."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ranking.exploration import ExplorationConfig, explore, explore_page
from training.click_profiles import RealisticProfile, RealisticUser, ZipfQueries, overlap, zipf_weights
from training.click_simulator import Page, SimulatorConfig, simulate
from training.click_users import SimulatedUser, UserConfig

TOPICS = ["protein folding", "insulin resistance", "vitamin d", "zebrafish heart", "sleep memory", "gut bacteria"]


def test_zipf_frequencies_have_a_head_and_a_tail_seen_once_or_twice() -> None:
    qids = [f"q{i}" for i in range(800)]
    zipf = ZipfQueries(qids, 1.0, seed=3)
    counts = Counter(zipf.draw(np.random.default_rng([3, i])) for i in range(5000))
    ranked = [q for q, _ in counts.most_common()]
    head = sum(counts[q] for q in zipf.by_rank[:10]) / 5000
    expected = zipf_weights(800, 1.0)[:10].sum()  # H_10 / H_800, about 0.40
    assert abs(head - expected) < 0.03 and head > 0.35
    assert counts[zipf.by_rank[0]] > 500 and ranked[0] == zipf.by_rank[0]  # the head query repeats hundreds of times
    tail = [counts[q] for q in zipf.by_rank[400:] if counts[q] > 0]
    assert sum(c <= 2 for c in tail) >= 0.75 * len(tail), Counter(tail)  # most of the tail: once or twice
    assert len(counts) < 700  # some of the tail never searched
    assert ZipfQueries(qids, 1.0, seed=4).by_rank[:10] != zipf.by_rank[:10]  # the seed shuffles the mapping
    uniform = Counter(ZipfQueries(qids, 0.0, seed=3).draw(np.random.default_rng([3, i])) for i in range(5000))
    assert max(uniform.values()) < 25  # exponent 0 is uniform


def test_adjacent_swap_touches_at_most_the_share_and_one_adjacent_pair() -> None:
    items = list(range(30))
    cfg = ExplorationConfig(rate=0.1, top_k=10, mode="adjacent_swap")
    explored = 0
    pairs: Counter[int] = Counter()
    for i in range(5000):
        out, was, swapped = explore_page(items, cfg, f"s{i}\x1fquery")
        if not was:
            assert out == items and swapped is None
            continue
        explored += 1
        assert swapped is not None and swapped[1] == swapped[0] + 1 and 1 <= swapped[0] <= 9
        changed = [k for k in range(30) if out[k] != items[k]]
        assert changed == [swapped[0] - 1, swapped[1] - 1]  # exactly that pair, swapped, nothing else
        assert out[changed[0]] == items[changed[1]] and out[changed[1]] == items[changed[0]]
        pairs[swapped[0]] += 1
    assert 0.085 < explored / 5000 < 0.115
    assert set(pairs) == set(range(1, 10))  # every adjacent pair of the top 10, and none below
    assert explore_page(items, cfg, "s7\x1fquery") == explore_page(items, cfg, "s7\x1fquery")  # seeded
    short = ExplorationConfig(rate=1.0, top_k=10, mode="adjacent_swap")
    assert explore_page([1, 2], short, "k") == ([2, 1], True, [1, 2])  # a page shorter than top_k
    assert explore(items, short, "k")[1] and explore(items, ExplorationConfig(rate=1.0), "k")[0][:10] != items[:10]


def test_attractiveness_raises_click_rates_for_overlapping_snippets() -> None:
    assert overlap("Protein folding in cells", "<em>Protein</em> is <em>folded</em> … of a cell") == 1.0
    assert overlap("protein folding", "insulin resistance") == 0.0
    user = RealisticUser(RealisticProfile(abandonment=0.0, eta=0.0))
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(10)]
    judged = {d: 1 for d in docs[::2]}
    low = np.mean([user.clicks(docs, judged, [0.0] * 10, rng) for _ in range(3000)], axis=0)
    high = np.mean([user.clicks(docs, judged, [1.0] * 10, rng) for _ in range(3000)], axis=0)
    assert high[0] > low[0] + 0.3  # a relevant result whose snippet shows the query is clicked far more often
    assert high[1] > low[1] + 0.05  # and a non-relevant one too (it looks relevant)
    assert high[0::2].mean() > high[1::2].mean() + 0.4  # relevance still matters
    assert low[9] >= 0.04  # noise clicks on a non-relevant result that shows nothing of the query
    trusted = RealisticUser(RealisticProfile(noise=0.0, abandonment=0.0, eta=0.0)).click_probability(
        np.zeros(10, dtype=np.int64), np.ones(10)
    )
    assert trusted[0] > 2 * trusted[4] > 0  # trust bias: non-relevant results are clicked more at the top


def test_abandonment_share() -> None:
    profile = RealisticProfile(abandonment=0.4, noise=1.0, eta=0.0)  # engaged users always click: only abandonment
    user = RealisticUser(profile)
    rng = np.random.default_rng(1)
    docs = [f"d{i}" for i in range(10)]
    none = np.mean([not user.clicks(docs, {}, [0.5] * 10, rng).any() for _ in range(4000)])
    assert abs(none - 0.4) < 0.03


class FakeClient:
    """A deterministic search engine: every query shows the same 10 docs, titles echoing some query words."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[Any] = []

    async def search(self, req: Any) -> Page:
        self.requests.append(req)
        docs = [f"d{i}" for i in range(60)][:10]
        texts = [req.query if i % 3 == 0 else "unrelated words" for i in range(10)]
        return Page(query_id=f"{req.session_id}", shown=docs, texts=texts)

    async def send(self, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)

    async def aclose(self) -> None:
        return None


def _simulate(cfg: SimulatorConfig, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> tuple[Any, Any]:
    client = FakeClient()
    report = asyncio.run(simulate(client, queries, qrels, cfg))
    return client, report


QUERIES = {f"q{j}": f"{t} study" for j, t in enumerate(TOPICS)}
QRELS = {f"q{j}": {f"d{i}": 1 for i in range(j % 4, 10, 4)} for j in range(len(TOPICS))}


def test_same_seed_same_sessions_and_no_clicks_counted() -> None:
    cfg = SimulatorConfig(sessions=300, seed=7, progress=False, profile="realistic")
    a, ra = _simulate(cfg, QUERIES, QRELS)
    b, rb = _simulate(cfg, QUERIES, QRELS)
    strip = [[{k: v for k, v in e.items() if k != "timestamp"} for e in c.events] for c in (a, b)]
    assert strip[0] == strip[1] and ra.clicks == rb.clicks == len(a.events) > 0
    assert [r.query for r in a.requests] == [r.query for r in b.requests]
    assert all(r.highlight for r in a.requests)  # realistic users read the snippets
    c, _ = _simulate(cfg.model_copy(update={"seed": 8}), QUERIES, QRELS)
    assert [e["event_id"] for e in c.events] != [e["event_id"] for e in a.events]
    assert ra.no_click_sessions >= cfg.realistic.abandonment * 300 - 20  # at least the abandoned share
    by_query = Counter(r.query for r in a.requests)
    assert max(by_query.values()) > 2 * min(by_query.values())  # Zipf, not uniform


def test_ideal_profile_is_unchanged() -> None:
    """The ideal profile draws its queries and clicks exactly as before the realistic profile existed."""
    user = UserConfig(eta=0.5)
    cfg = SimulatorConfig(sessions=200, seed=5, progress=False, user=user)
    client, report = _simulate(cfg, QUERIES, QRELS)
    qids = sorted(QUERIES)
    expected = []
    for i in range(200):
        rng = np.random.default_rng([5, i])
        qid = qids[int(rng.integers(len(qids)))]
        assert client.requests[i].query == QUERIES[qid] and not client.requests[i].highlight
        clicks = SimulatedUser(user).clicks([f"d{k}" for k in range(10)], QRELS[qid], rng)
        expected += [f"sim-5-{i}-{r + 1}" for r in np.flatnonzero(clicks)]
    assert sorted(e["event_id"] for e in client.events) == sorted(expected) and report.clicks == len(expected)


def test_realistic_cli_logs_gentle_swaps(tmp_path: Path) -> None:
    """`sift clicks simulate --profile realistic` in-process: the served search swaps one adjacent pair on about
    a tenth of first pages and the impression log names the pair."""
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore
    from sift.cli import app
    from sift.clicks_cli import read_logs

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(60):
            t = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"_id": f"d{i}", "title": f"{t} study {i}", "text": f"{t} results {i}"}) + "\n")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    rows = [f"q{j}\td{i}\t1" for j in range(len(TOPICS)) for i in range(j, 60, 18)]
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    data = tmp_path / "data"
    cfg = IndexingConfig(embed=False, dead_letter_dir=data / "dead", progress=False)
    IndexingPipeline(EmbeddedStore(data / "indices"), None, cfg).build(root / "corpus.jsonl", "docs")
    config = tmp_path / "app.yaml"
    app_cfg = {
        "data_dir": str(data),
        "search": {"retrieval": {"mode": "bm25"}, "exploration": {"rate": 1.0}},  # the profile replaces it
        "reranker": {"model": None},
        "suggest": {"enabled": False},
        "summarizer": None,
    }
    config.write_text(yaml.safe_dump(app_cfg))
    args = ["clicks", "simulate", "--dataset", str(root), "--sessions", "600", "--config", str(config)]
    res = CliRunner().invoke(app, [*args, "--profile", "realistic", "--seed", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.rindex('{"sessions"') :])
    assert report["sessions"] == 600 and report["clicks"] > 0 and report["no_click_sessions"] >= 100
    imps, _ = read_logs(config)
    assert len(imps) == 600
    explored = [e for e in imps if e.explored]
    assert 30 <= len(explored) <= 90  # about 10% of first pages, not every one
    plain = {e.query: e.shown for e in imps if not e.explored}
    for e in explored:
        assert e.swapped is not None and e.swapped[1] == e.swapped[0] + 1 and e.swapped[1] <= 10
        i, j = e.swapped[0] - 1, e.swapped[1] - 1
        before = list(plain[e.query])
        before[i], before[j] = before[j], before[i]
        assert e.shown == before  # the unexplored page with that one pair swapped
    assert all(e.swapped is None for e in imps if not e.explored)
    bad = CliRunner().invoke(app, [*args, "--profile", "typical"])
    assert bad.exit_code == 2 and "--profile must be" in bad.output


@pytest.mark.parametrize("eta", [1.0, 1.5])
def test_examination_follows_eta(eta: float) -> None:
    user = RealisticUser(RealisticProfile(eta=eta, abandonment=0.0, noise=1.0))
    rng = np.random.default_rng(2)
    rate = np.mean([user.clicks([f"d{i}" for i in range(10)], {}, [1.0] * 10, rng) for _ in range(4000)], axis=0)
    assert abs(rate[1] - 2**-eta) < 0.03 and abs(rate[3] - 4**-eta) < 0.03
