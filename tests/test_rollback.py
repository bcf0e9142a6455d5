"""`sift versions rollback` and `indexing.versions.rollback` against both real stores (embedded and
Elasticsearch): the alias moves back (and forward) to complete versions only, a version that is incomplete
(crashed or refused by the quality gate) or gone is refused with the alias left alone, and a rollback while a
build holds the index's lock is refused like an incremental run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from indexing.finalize import build_lock
from indexing.gate import GateConfig, GateRefused
from indexing.pipeline import IndexingPipeline
from indexing.versions import RollbackRefused, rollback
from search.stores.base import IndexStore, LockHeld
from sift.cli import app
from sift.exit_codes import FAILED, OK, USAGE
from tests.test_pipeline import make_config, store, write_jsonl

__all__ = ["store"]  # both real stores (test_pipeline's fixture)

RELEVANT = {"id": "dec", "title": "Decorators", "text": "decorators wrap functions and methods"}


def docs(n: int, with_relevant: bool = True) -> list[dict[str, Any]]:
    filler = [{"id": f"d{i}", "title": f"Filler {i}", "text": f"unrelated text about topic {i}"} for i in range(n)]
    return [RELEVANT, *filler] if with_relevant else filler


def build(store: IndexStore, tmp_path: Path, index: str, rows: list[dict[str, Any]], **cfg: Any) -> str:
    src = write_jsonl(tmp_path / f"src-{len(rows)}-{len(cfg)}.jsonl", rows)
    report = IndexingPipeline(store, None, make_config(tmp_path, embed=False, **cfg)).build(src, index)
    assert report.alias_switched
    return report.version


def test_rollback_back_and_forward(store: IndexStore, tmp_path: Path, index_name: str) -> None:
    v1 = build(store, tmp_path, index_name, docs(10))
    v2 = build(store, tmp_path, index_name, docs(15))
    assert store.current_version(index_name) == v2 and store.count(index_name) == 16

    back = rollback(store, index_name)  # default: the newest complete version before the live one
    assert (back.previous, back.version, back.switched) == (v2, v1, True)
    assert store.current_version(index_name) == v1 and store.count(index_name) == 11
    assert store.bm25_search(index_name, "decorators", 3)[0].id == "dec"  # the alias serves v1's documents

    with pytest.raises(RollbackRefused, match=r"no complete version .* older than the live"):
        rollback(store, index_name)  # nothing older than v1: refused, not a silent no-op
    assert store.current_version(index_name) == v1

    forward = rollback(store, index_name, to=v2)  # an explicit complete version may be newer
    assert (forward.previous, forward.version, forward.switched) == (v1, v2, True)
    again = rollback(store, index_name, to=v2)
    assert not again.switched and store.current_version(index_name) == v2


def test_refuses_incomplete_gate_refused_and_missing_versions(
    store: IndexStore, tmp_path: Path, index_name: str
) -> None:
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "decorators wrap functions"}) + "\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdec\t1\n")
    gate = GateConfig(qrels=tmp_path / "qrels.tsv", queries=tmp_path / "queries.jsonl", mode="bm25")
    v1 = build(store, tmp_path, index_name, docs(10))
    v2 = build(store, tmp_path, index_name, docs(12))
    with pytest.raises(GateRefused):  # the relevant document is gone: nDCG@10 1.0 → 0.0
        build(store, tmp_path, index_name, docs(14, with_relevant=False), gate=gate)
    refused = next(v.version for v in store.list_versions(index_name) if not v.complete)
    assert store.current_version(index_name) == v2

    with pytest.raises(RollbackRefused, match=f"version {refused} is incomplete"):
        rollback(store, index_name, to=refused)
    crashed = store.create_version(index_name, 1, make_config(tmp_path).schema_)  # a build killed mid-way
    with pytest.raises(RollbackRefused, match="incomplete"):
        rollback(store, index_name, to=crashed)
    store.drop_version(v1)
    if hasattr(store, "client"):  # Elasticsearch: the dropped version's stored vocabulary goes with it
        from search.stores.es_vocab import VOCAB_INDEX

        def vocab_docs(version: str) -> int:
            return int(store.client.count(index=VOCAB_INDEX, query={"term": {"of_version": version}})["count"])

        assert vocab_docs(v1) == 0 and vocab_docs(v2) > 0
    with pytest.raises(RollbackRefused, match=f"version {v1} no longer exists"):
        rollback(store, index_name, to=v1)
    with pytest.raises(RollbackRefused, match="not a version of"):
        rollback(store, index_name, to=v2.replace(index_name, "other"))
    with pytest.raises(RollbackRefused, match="no complete version"):  # the incomplete ones are no fallback
        rollback(store, index_name)
    assert store.current_version(index_name) == v2 and store.count(index_name) == 13


def test_refused_while_a_build_holds_the_index(store: IndexStore, tmp_path: Path, index_name: str) -> None:
    v1 = build(store, tmp_path, index_name, docs(10))
    v2 = build(store, tmp_path, index_name, docs(15))
    with build_lock(store, index_name, lease_s=60, owner="the-running-build"):
        with pytest.raises(LockHeld, match="the-running-build"):
            rollback(store, index_name, to=v1)
        assert store.current_version(index_name) == v2
    assert rollback(store, index_name).version == v1  # the lock is free again


def test_cli_exit_codes_and_messages(
    store: IndexStore, tmp_path: Path, index_name: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The CLI over the same store: 0 with a JSON report, 1 for a refusal, 2 for bad input; stderr says why."""
    from search.stores.elasticsearch import ElasticsearchStore

    kind = "es" if isinstance(store, ElasticsearchStore) else "embedded"
    if kind == "es":
        monkeypatch.setenv("ELASTICSEARCH_URL", request.getfixturevalue("es_url"))
    else:
        monkeypatch.setenv("SIFT_DATA_DIR", str(tmp_path))  # the embedded store lives in <data dir>/indices
    v1 = build(store, tmp_path, index_name, docs(10))
    v2 = build(store, tmp_path, index_name, docs(15))
    runner = CliRunner()

    def sift(*args: str) -> Any:
        return runner.invoke(app, ["versions", *args, "--store", kind])

    listed = sift("--index", index_name)
    assert listed.exit_code == OK and f"* {v2}" in listed.stdout and f"  {v1}" in listed.stdout
    done = sift("rollback", "--index", index_name)
    assert done.exit_code == OK, done.output
    assert json.loads(done.stdout) == {"index": index_name, "previous": v2, "version": v1, "switched": True}
    assert store.current_version(index_name) == v1

    crashed = store.create_version(index_name, 1, make_config(tmp_path).schema_)
    refused = sift("rollback", "--index", index_name, "--to", crashed)
    assert refused.exit_code == FAILED and "incomplete" in refused.stderr and "alias unchanged" in refused.stderr
    with build_lock(store, index_name, lease_s=60, owner="nightly-reindex"):
        locked = sift("rollback", "--index", index_name, "--to", v2)
    assert locked.exit_code == FAILED and "nightly-reindex" in locked.stderr
    bad = sift("rollback", "--index", "Bad Name")
    assert bad.exit_code == USAGE and "invalid index name" in bad.stderr
    assert store.current_version(index_name) == v1


def test_next_build_keeps_the_version_rolled_back_to(store: IndexStore, tmp_path: Path, index_name: str) -> None:
    """After a rollback from a bad v2 to v1, the next build's fallback is v1 (the version it replaced), not the
    newer bad v2: with keep_versions=2 the build prunes v2."""
    v1 = build(store, tmp_path, index_name, docs(10), keep_versions=2)
    v2 = build(store, tmp_path, index_name, docs(15), keep_versions=2)
    rollback(store, index_name)
    v3 = build(store, tmp_path, index_name, docs(12), keep_versions=2)
    kept = [v.version for v in store.list_versions(index_name)]
    assert v1 in kept and v3 in kept and v2 not in kept, (v1, v2, v3, kept)
