"""The click simulator through the real HTTP API and in-process (same records), the logs → sessions join,
`sift clicks fit|judgments`, `sift eval --qrels`-style loading, and the split discipline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from indexing.pipeline import IndexingConfig, IndexingPipeline
from ranking.exploration import ExplorationConfig, explore
from tests.widget_server import serve_in_thread

INDEX = "sim-docs"
TOPICS = ["protein folding", "insulin resistance", "vitamin d", "zebrafish heart", "sleep memory", "gut bacteria"]


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder: 60 docs, train queries with qrels, and a test split that must never be read."""
    root = tmp_path_factory.mktemp("sim-beir")
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(60):
            t = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"_id": f"d{i}", "title": f"{t} study {i}", "text": f"{t} results {i}"}) + "\n")
    (root / "queries_train.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{j}", "text": f"{t} study"}) + "\n" for j, t in enumerate(TOPICS))
    )
    (root / "queries.jsonl").write_text(json.dumps({"_id": "t0", "text": "held out"}) + "\n")
    (root / "qrels").mkdir()
    rows = [f"q{j}\td{i}\t1" for j in range(len(TOPICS)) for i in range(j, 60, 6 * 3)]  # every 3rd doc of a topic
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nt0\td0\t1\n")
    return root


def app_config(data_dir: Path) -> Any:
    from serving.config import AppConfig

    return AppConfig.model_validate(
        {
            "data_dir": str(data_dir),
            "search": {
                "default_index": INDEX,
                "retrieval": {"mode": "bm25"},
                "exploration": {"rate": 1.0, "top_k": 10},
            },
            "reranker": {"model": None},
            "suggest": {"enabled": False},
            "summarizer": None,
        }
    )


@pytest.fixture(scope="module")
def two_backends(beir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Two apps on identical indices with separate logs: one driven over HTTP, one in-process."""
    from search.settings import Settings
    from search.stores.embedded import EmbeddedStore
    from serving.local import local_backend

    out = []
    with ExitStack() as stack:
        for name in ("http", "inproc"):
            data = tmp_path_factory.mktemp(f"sim-{name}")
            cfg = IndexingConfig(embed=False, dead_letter_dir=data / "dead", progress=False)
            IndexingPipeline(EmbeddedStore(data / "indices"), None, cfg).build(beir / "corpus.jsonl", INDEX)
            backend = local_backend(app_config(data), Settings())
            stack.callback(backend.store.close)
            stack.callback(backend.suggest.close)
            out.append((backend, data))
        yield out


def run(client: Any, data: Any, sessions: int, seed: int) -> Any:
    from training.click_simulator import SimulatorConfig, simulate
    from training.click_users import UserConfig

    cfg = SimulatorConfig(sessions=sessions, seed=seed, progress=False, batch_events=7, user=UserConfig(eta=0.5))

    async def go() -> Any:
        try:
            return await simulate(client, data.queries, data.qrels, cfg)
        finally:
            await client.aclose()

    return asyncio.run(go())


def records(backend: Any) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    imps = {
        (e.query, tuple(e.shown or ()), e.offset, e.session_id, e.explored)
        for e in backend.suggest.query_log.read()
        if e.type == "search"
    }
    clicks = {
        (c.event_id, c.query, tuple(c.object_ids), tuple(c.positions or ()), c.session_id)
        for c in backend.events.clicks.read()
    }
    return imps, clicks


def test_http_and_in_process_simulations_log_the_same_records(
    beir: Path, two_backends: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.beir as beir_mod
    from serving.api import create_api
    from sift.clicks_cli import _backend_search
    from training.click_logs import sessions_from_logs
    from training.click_simulator import HttpClient, InProcessClient

    read: list[str] = []
    real = beir_mod.read_qrels
    monkeypatch.setattr(beir_mod, "read_qrels", lambda p: read.append(Path(p).name) or real(p))
    data = beir_mod.load_beir(beir, "train")
    assert read == ["train.tsv"] and set(data.queries) == {f"q{j}" for j in range(len(TOPICS))}

    (http_backend, _), (local, _) = two_backends
    with serve_in_thread(create_api(http_backend, http_backend.metrics)) as url:
        over_http = run(HttpClient(url), data, 120, seed=5)
    in_process = run(InProcessClient(_backend_search(local), local.events), data, 120, seed=5)
    assert over_http.clicks == in_process.clicks > 0
    assert over_http.clicks_by_position == in_process.clicks_by_position
    imps_http, clicks_http = records(http_backend)
    imps_local, clicks_local = records(local)
    assert len(imps_http) > 20 and imps_http == imps_local
    assert all(explored for *_, explored in imps_http)  # exploration shuffled every first page
    assert len(clicks_http) == over_http.clicks and clicks_http == clicks_local

    # Same seed again: new impressions, but the event ids repeat and nothing is stored twice.
    again = run(InProcessClient(_backend_search(local), local.events), data, 120, seed=5)
    assert again.clicks == in_process.clicks
    assert len(list(local.events.clicks.read())) == in_process.clicks
    sessions = sessions_from_logs(local.suggest.query_log.read(), local.events.clicks.read())
    assert len(sessions) == 240 and sum(sum(s.clicks) for s in sessions) == in_process.clicks
    assert all(len(s.docs) == 10 for s in sessions)


def test_clicks_fit_and_judgments_cli(beir: Path, two_backends: list[Any], tmp_path: Path) -> None:
    from sift.cli import app
    from training.beir import load_beir
    from training.click_logs import agreement, judgments, sessions_from_logs
    from training.click_models import PBMModel

    _, (local, data_dir) = two_backends
    if not list(local.events.clicks.read()):  # this test alone: fill the logs first
        from sift.clicks_cli import _backend_search
        from training.click_simulator import InProcessClient

        run(InProcessClient(_backend_search(local), local.events), load_beir(beir, "train"), 120, seed=5)
    config = tmp_path / "app.yaml"
    config.write_text(yaml.safe_dump(app_config(data_dir).model_dump(mode="json", exclude_none=True)))
    runner = CliRunner()
    fit = runner.invoke(app, ["clicks", "fit", "--model", "pbm", "--config", str(config), "--out", str(tmp_path / "f")])
    assert fit.exit_code == 0, fit.output
    result = json.loads(fit.output.splitlines()[0])
    assert result["model"] == "pbm" and result["sessions"] >= 120 and len(result["propensities"]) == 10
    assert result["propensities"][0] == 1.0 and result["heldout_ll"] < 0
    assert "relevance" in json.loads((tmp_path / "f").read_text())

    out = tmp_path / "judged"
    args = ["clicks", "judgments", "--config", str(config), "--out", str(out), "--dataset", str(beir)]
    # The user clicks relevant docs with P 0.5 once examined, others with 0.1; a replayed run in this module
    # logged its impressions again without new clicks, which halves what the click model can see.
    res = runner.invoke(app, [*args, "--min-impressions", "2", "--thresholds", "0.2"])
    assert res.exit_code == 0, res.output
    qrels = (out / "qrels" / "clicks.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) > len(TOPICS)
    judged = [line.split("\t")[:2] for line in qrels[1:]]
    assert {q for q, _ in judged} <= {f"q{j}" for j in range(len(TOPICS))}  # dataset ids
    true = load_beir(beir, "train").qrels
    assert sum(true[q].get(d, 0) > 0 for q, d in judged) >= 0.8 * len(judged), judged  # graded docs are relevant
    scored = load_beir(beir, "clicks", qrels_file=out / "qrels" / "clicks.tsv")
    assert scored.qrels and set(scored.queries) == set(scored.qrels)

    # The click model ranks shown documents much as the true qrels do (a small, noisy log here).
    train = load_beir(beir, "train")
    sessions = sessions_from_logs(local.suggest.query_log.read(), local.events.clicks.read())
    agree = agreement(judgments(PBMModel().fit(sessions), sessions), train.qrels, train.queries)
    assert agree.queries == len(TOPICS) and agree.ratio > 0.7, agree

    bad = runner.invoke(app, ["clicks", "fit", "--model", "ubm", "--config", str(config)])
    assert bad.exit_code == 2 and "--model must be" in bad.output


def test_exploration_is_seeded_and_keeps_the_tail() -> None:
    items = list(range(30))
    cfg = ExplorationConfig(rate=1.0, top_k=10)
    a, explored = explore(items, cfg, "s1\x1fquery")
    assert explored and sorted(a[:10]) == list(range(10)) and a[10:] == items[10:] and a[:10] != items[:10]
    assert explore(items, cfg, "s1\x1fquery")[0] == a  # same session and query, same page
    assert explore(items, ExplorationConfig(rate=0.0), "k") == (items, False)
    share = sum(explore(items, ExplorationConfig(rate=0.3), f"k{i}")[1] for i in range(2000)) / 2000
    assert 0.25 < share < 0.35
