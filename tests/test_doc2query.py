"""doc2query expansion (indexing/doc2query.py): queries a causal LM writes per document, matched by BM25 only in
both stores, cached by content hash so a rebuild regenerates only changed documents."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from indexing.doc2query import Doc2QueryConfig, Doc2QueryExpander, expand_stream
from indexing.readers import ReadItem
from search.documents import EXPANSION_FIELD, Document, StoredRecord, bm25_text
from search.schema import IndexSchema
from search.stores.base import IndexStore

DOCS = [
    Document(id="a", title="Loops", body="Iterating over items with for and while."),
    Document(id="b", title="Files", body="Opening and reading files line by line."),
]


@pytest.fixture(scope="module")
def tiny_d2q(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-d2q"), ["Document: loops\nQuery: python loop syntax\n"] * 4)


def _expander(model: Path, cache: Path | None) -> Doc2QueryExpander:
    cfg = Doc2QueryConfig(model=str(model), num_queries=2, max_new_tokens=6, cache=cache, filter_model=None)
    return Doc2QueryExpander(cfg)


def test_expansion_is_cached_by_content(tiny_d2q: Path, tmp_path: Path) -> None:
    exp = _expander(tiny_d2q, tmp_path / "d2q.sqlite")
    first = exp.expand(DOCS)
    assert all(isinstance(d.fields[EXPANSION_FIELD], list) for d in first)
    assert exp.stats == {"generated": 2, "cached": 0, "filtered_out": 0}
    exp.close()
    again = _expander(tiny_d2q, tmp_path / "d2q.sqlite")  # a later reindex: a new process, the same cache
    changed = DOCS[1].model_copy(update={"body": "Writing files."})
    second = again.expand([DOCS[0], changed])
    assert again.stats == {"generated": 1, "cached": 1, "filtered_out": 0}
    assert second[0].fields[EXPANSION_FIELD] == first[0].fields[EXPANSION_FIELD]
    again.close()


class WordsEmbedder:
    """A bag-of-words embedder (hashed words, unit length): cosine is word overlap, so a test can say which query
    is about its document."""

    model_id = "words"
    dims = 256
    max_tokens = 512
    tokenizer = None

    def __init__(self) -> None:
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").replace(":", " ").split():
                out[i, int(hashlib.sha256(w.encode()).hexdigest(), 16) % self.dims] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_the_filter_drops_queries_unrelated_to_their_document_after_the_cache(tiny_d2q: Path, tmp_path: Path) -> None:
    written = {"a": ["iterating over items with while", "zebra crossing rules"], "b": ["reading files line by line"]}
    cfg = Doc2QueryConfig(model=str(tiny_d2q), num_queries=2, max_new_tokens=6, cache=tmp_path / "d2q.sqlite")
    plain = Doc2QueryExpander(cfg)
    plain._cache.put_many({plain._key(d): written[d.id] for d in DOCS})  # type: ignore[union-attr]
    plain.close()

    scorer = WordsEmbedder()
    kept = Doc2QueryExpander(cfg.model_copy(update={"min_relevance": 0.3}), scorer=scorer)
    out = {d.id: d.fields[EXPANSION_FIELD] for d in kept.expand(DOCS)}
    assert out == {"a": ["iterating over items with while"], "b": ["reading files line by line"]}
    assert kept.stats == {"generated": 0, "cached": 2, "filtered_out": 1}
    assert kept._model is None  # every query came from the cache: the LM was never loaded
    kept.close()

    # A lower threshold keeps both, from the same cache: changing the filter regenerates nothing.
    loose = Doc2QueryExpander(cfg.model_copy(update={"min_relevance": -1.0}), scorer=scorer)
    assert [d.fields[EXPANSION_FIELD] for d in loose.expand(DOCS)] == [written["a"], written["b"]]
    assert loose.stats["generated"] == 0 and loose.stats["filtered_out"] == 0
    loose.close()


def test_stream_keeps_order_and_passes_errors_through(tiny_d2q: Path) -> None:
    items = [
        ReadItem("f:1", DOCS[0], None, {}),
        ReadItem("f:2", None, "bad json", None),
        ReadItem("f:3", DOCS[1], None, {}),
    ]
    out = list(expand_stream(items, _expander(tiny_d2q, None), batch=2))
    assert [i.position for i in out] == ["f:1", "f:2", "f:3"]
    assert out[1].doc is None and out[0].doc is not None and EXPANSION_FIELD in out[0].doc.fields


def test_bm25_text_includes_the_queries_only_when_present() -> None:
    plain = bm25_text(DOCS[0])
    assert "Loops" in plain and "zebra" not in plain
    assert "zebra crossing" in bm25_text(DOCS[0].model_copy(update={"fields": {EXPANSION_FIELD: ["zebra crossing"]}}))


def _check_store_matches_expansion(store: IndexStore, index: str) -> None:
    version = store.create_version(index, 2, IndexSchema())
    doc = DOCS[0].model_copy(update={"fields": {EXPANSION_FIELD: ["zebra crossing rules"]}})
    store.upsert(version, [StoredRecord(doc=doc, content_hash=doc.content_hash()), StoredRecord(doc=DOCS[1])])
    store.refresh(version)
    hits = store.bm25_search(version, "zebra", 5)
    assert [h.id for h in hits] == ["a"], hits
    got = store.get_many(version, ["a"])["a"]
    assert got.body == DOCS[0].body  # the queries are not part of the text shown or embedded


class TestEmbedded:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[IndexStore]:
        from search.stores.embedded import EmbeddedStore

        s = EmbeddedStore(tmp_path / "data")
        s.warm_up()
        yield s
        s.close()

    def test_bm25_matches_the_expansion(self, store: IndexStore, index_name: str) -> None:
        _check_store_matches_expansion(store, index_name)


@pytest.mark.es
class TestElasticsearch:
    @pytest.fixture
    def store(self, es_url: str, index_name: str) -> Iterator[IndexStore]:
        from search.stores.elasticsearch import ElasticsearchStore

        s = ElasticsearchStore(es_url)
        s.warm_up()
        yield s
        s.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        s.close()

    def test_bm25_matches_the_expansion(self, store: IndexStore, index_name: str) -> None:
        _check_store_matches_expansion(store, index_name)


def test_pipeline_runs_the_expansion_stage(tiny_d2q: Path, tmp_path: Path) -> None:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "title": d.title, "text": d.body}) + "\n" for d in DOCS))
    d2q = Doc2QueryConfig(model=str(tiny_d2q), num_queries=2, max_new_tokens=6, cache=tmp_path / "c.sqlite")
    cfg = IndexingConfig(embed=False, progress=False, dead_letter_dir=tmp_path / "dead", doc2query=d2q)
    store = EmbeddedStore(tmp_path / "indices")
    report = IndexingPipeline(store, None, cfg).build(corpus, "d2q")
    assert report.indexed == 2
    docs = store.get_many("d2q", ["a", "b"])
    assert all(isinstance(d.fields.get(EXPANSION_FIELD), list) for d in docs.values())
    store.close()


def test_shared_prefill_samples_what_num_return_sequences_samples(tiny_d2q: Path) -> None:
    """The prompt is prefilled once and its cache repeated (models.causal_lm.sample_shared_prompts): for the same
    seed the samples equal generate()'s `num_return_sequences` ones, for prompts of different lengths (left pads)."""
    import torch

    from models.causal_lm import LMConfig, load_lm, sample_shared_prompts

    model, tok, device = load_lm(LMConfig(model=str(tiny_d2q), device="cpu"))
    tok.padding_side = "left"
    texts = ["Document: loops\nQuery:", "Document: reading files line by line in python\nQuery:"]
    kwargs = {"do_sample": True, "top_k": 10, "max_new_tokens": 8, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(7)
    shared = sample_shared_prompts(model, tok, texts, 3, device, **kwargs)
    enc = tok(texts, return_tensors="pt", padding=True)
    torch.manual_seed(7)
    plain = model.generate(**enc, num_return_sequences=3, **kwargs)[:, enc["input_ids"].shape[1] :]
    assert shared.shape[0] == 6 and torch.equal(shared, plain)
    torch.manual_seed(8)
    assert not torch.equal(sample_shared_prompts(model, tok, texts, 3, device, **kwargs), shared)  # a sample


def test_title_tail_prompts_keep_the_title_and_the_last_whole_words() -> None:
    from indexing.doc2query import prompt_text

    body = "Background words open it. Methods follow here. We conclude that statins lower risk"
    tail = prompt_text("Statins and risk", body, 50, "title_tail")
    assert tail == "Statins and risk ... that statins lower risk" and len(tail) <= 50
    exact = prompt_text("Statins and risk", body, 44, "title_tail")  # the tail's words fill the room exactly
    assert exact == "Statins and risk ... that statins lower risk" and len(exact) == 44
    assert prompt_text("Statins", "lower risk", 18, "title_tail") == "Statins lower risk"  # it all fits: no cut
    assert prompt_text("A title longer than the room", body, 12, "title_tail") == "A title long"
    head = prompt_text("Statins  and risk", body, 30, "head")
    assert head == " ".join(f"Statins  and risk {body}".split())[:30]  # the opening, as before the option


def test_training_and_indexing_build_the_same_doc2query_prompt() -> None:
    """The LM must see at indexing the text it learnt from: both sides go through `prompt_text`, and the training
    side's fetch keeps title and body apart (an empty title, a body of several lines)."""
    from datetime import UTC, datetime

    from indexing.doc2query import DOC2QUERY_HEADER, prompt
    from logs.clicklog import ClickRecord
    from logs.querylog import QueryEvent
    from training.lm_data import LMDataConfig, build_lm_data
    from training.lm_run import doc_fetch

    long_body = " ".join(f"word{i}" for i in range(300))
    docs = {
        "d": Document(id="d", title="Statins and risk", body=long_body + " the end"),
        "e": Document(id="e", title="", body=long_body + "\nsecond line, the end"),
    }

    class Store:
        def get_many(self, index: str, ids: Sequence[str]) -> dict[str, Document]:
            return {i: docs[i] for i in ids if i in docs}

    ts = datetime(2026, 1, 1, tzinfo=UTC)
    imps, clicks = [], []
    for i in range(6):
        doc = "de"[i % 2]
        imps.append(QueryEvent(type="search", ts=ts, query=f"query about {doc}", session_id=f"s{i}",
                               query_id=f"q{i}", shown=[doc], offset=0, index="docs"))  # fmt: skip
        clicks.append(ClickRecord(event_id=f"e{i}", type="click", event_name="click", query_id=f"q{i}",
                                  object_ids=[doc], positions=[1], ts=ts, received_at=ts, session_id=f"s{i}",
                                  query=f"query about {doc}"))  # fmt: skip
    for part in ("head", "title_tail"):
        cfg = LMDataConfig(task="doc2query", doc_chars=120, doc_part=part, heldout_fraction=0.0, min_sessions=2)  # type: ignore[arg-type]
        examples = build_lm_data(imps, clicks, cfg, fetch=doc_fetch(Store(), "docs", cfg)).train
        served = Doc2QueryConfig(model="-", doc_chars=120, doc_part=part)  # type: ignore[arg-type]
        got = {e.completion.split()[-1]: (e.header, e.prompt) for e in examples}
        assert got == {d: (DOC2QUERY_HEADER, prompt(docs[d], served)) for d in docs}
        assert all(("the end" in p) == (part == "title_tail") for _, p in got.values())


def test_prompt_shape_and_dtype_are_part_of_the_cache_key(tiny_d2q: Path) -> None:
    base = Doc2QueryConfig(model=str(tiny_d2q), filter_model=None)
    keys = {
        Doc2QueryExpander(base.model_copy(update=u))._key(DOCS[0])
        for u in ({}, {"doc_part": "title_tail"}, {"dtype": "bfloat16"})
    }
    assert len(keys) == 3
    # the defaults keep the keys written before the options existed: caches already filled stay valid
    c, exp = base, Doc2QueryExpander(base)
    old = [tiny_d2q.name, c.num_queries, c.max_new_tokens, c.doc_chars, c.top_k, c.seed]
    assert exp._key(DOCS[0]) == hashlib.sha256(json.dumps([old, DOCS[0].content_hash()]).encode()).hexdigest()


def test_a_model_is_refused_a_prompt_shape_it_did_not_learn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from indexing.doc2query import check_prompt_shape

    card = {"config": {"task": "doc2query", "data": {"doc_chars": 600, "doc_part": "title_tail"}}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    check_prompt_shape(tmp_path, Doc2QueryConfig(model="-", doc_chars=600, doc_part="title_tail"))
    with pytest.raises(ValueError, match="learnt from `title_tail` prompts"):
        check_prompt_shape(tmp_path, Doc2QueryConfig(model="-", doc_chars=600))
    check_prompt_shape(tmp_path, Doc2QueryConfig(model="-", doc_chars=400, doc_part="title_tail"))
    assert "learnt from 600-character prompts; indexing with 400" in caplog.text
    check_prompt_shape(tmp_path / "stock", Doc2QueryConfig(model="-"))  # no card: a stock model, nothing to check
    (tmp_path / "card.json").write_text(json.dumps({"config": {"task": "doc2query", "data": {"doc_chars": 600}}}))
    with pytest.raises(ValueError, match="learnt from `head` prompts"):  # a card from before doc_part: head
        check_prompt_shape(tmp_path, Doc2QueryConfig(model="-", doc_part="title_tail"))
    (tmp_path / "card.json").write_text(json.dumps({"config": {"task": "suggest", "data": {"doc_chars": 600}}}))
    check_prompt_shape(tmp_path, Doc2QueryConfig(model="-", doc_part="title_tail"))  # not a doc2query model


def test_warm_up_checks_the_models_card(tiny_d2q: Path, tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "lm-doc2query-v1"
    shutil.copytree(tiny_d2q, model)
    (model / "card.json").write_text(json.dumps({"config": {"task": "doc2query", "data": {"doc_chars": 600}}}))
    exp = Doc2QueryExpander(Doc2QueryConfig(model=str(model), doc_part="title_tail", filter_model=None))
    with pytest.raises(ValueError, match=r"set doc2query\.doc_part to 'head'"):
        exp.expand(DOCS)
