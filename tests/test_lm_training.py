"""Fine-tuning the causal LM from the logs: privacy of the examples, their format, training on Ray Train."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logs.clicklog import ClickRecord
from logs.querylog import QueryEvent
from models.ray_session import shutdown_ray
from search.suggest.lm_completer import LMCompleter, LMCompleterConfig
from training.lm_data import LMDataConfig, LMExample, build_lm_data, suggest_examples
from training.lm_train import collate, encode

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POPULAR = ["protein folding in cells", "insulin resistance in mice", "zebrafish heart regeneration"]
RARE = "my neighbour's rare disease"  # issued by 2 sessions: below k = 3
PII = ["alice.smith@example.com results", "call 0612 345 678 now", "order 12345678 status", "card 4111 1111 1111 1111"]


def _log(n_sessions: int = 12) -> tuple[list[QueryEvent], list[ClickRecord]]:
    """Sessions search a popular query (a failed reformulation first in odd sessions) and click; two sessions
    also search the rare query, every session a PII query; everything is clicked."""
    imps: list[QueryEvent] = []
    clicks: list[ClickRecord] = []

    def search(session: str, query: str, minute: int, click: bool) -> None:
        qid = f"q{len(imps)}"
        ts = T0 + timedelta(minutes=minute)
        imps.append(QueryEvent(type="search", ts=ts, query=query, session_id=session, query_id=qid,
                               shown=["d1", "d2", "d3"], offset=0, index="docs"))  # fmt: skip
        if click:
            clicks.append(ClickRecord(event_id=f"e{qid}", type="click", event_name="click", query_id=qid,
                                      object_ids=[f"doc-{query[:4]}"], positions=[1], ts=ts, received_at=ts,
                                      session_id=session, query=query))  # fmt: skip

    for i in range(n_sessions):
        s, target, minute = f"s{i}", POPULAR[i % len(POPULAR)], i * 60
        if i % 2:
            search(s, target.split()[0], minute, click=False)
        search(s, target, minute + 1, click=True)
        search(s, PII[i % len(PII)], minute + 2, click=True)
        if i < 2:
            search(s, RARE, minute + 3, click=True)
    return imps, clicks


def _all_text(examples: list[LMExample]) -> str:
    return "\n".join(e.header + e.prompt + e.completion for e in examples)


@pytest.mark.parametrize("task", ["suggest", "related", "doc2query"])
def test_rare_and_personal_queries_never_reach_the_examples(task: str) -> None:
    imps, clicks = _log(n_sessions=18)
    fetch = lambda ids: {d: f"text of {d}" for d in ids}  # noqa: E731
    data = build_lm_data(imps, clicks, LMDataConfig(task=task, split="session"), fetch=fetch)  # type: ignore[arg-type]
    text = _all_text(data.train + data.heldout)
    assert data.train or data.heldout, data.stats
    assert "rare" not in text and "neighbour" not in text
    for pii in ["alice", "example.com", "345 678", "12345678", "4111", "<email>", "<number>"]:
        assert pii not in text
    assert data.stats["allowed_queries"] == 2 * len(POPULAR)  # the popular queries and their first words
    # k = 2 lets the rare query in: the threshold is what kept it out
    loose = build_lm_data(imps, clicks, LMDataConfig(task="suggest", min_sessions=2))
    assert "neighbour" in _all_text(loose.train + loose.heldout)


def test_related_pairs_and_splits() -> None:
    imps, clicks = _log()
    data = build_lm_data(imps, clicks, LMDataConfig(task="related", heldout_fraction=0.0))
    assert not data.train  # each reformulated-from query was issued by 2 sessions only
    by_time = build_lm_data(imps, clicks, LMDataConfig(split="time", heldout_fraction=0.25))
    assert by_time.train and by_time.heldout and by_time.data_hash != data.data_hash
    again = build_lm_data(imps, clicks, LMDataConfig(split="time", heldout_fraction=0.25))
    assert again.data_hash == by_time.data_hash
    late = max(e.ts for e in imps) - timedelta(hours=3)
    assert {e.completion for e in by_time.heldout if e.prompt == "-"} <= {  # held out: what was searched last
        " " + e.query + "\n" for e in imps if e.ts >= late
    }
    same_time = [e.model_copy(update={"ts": T0}) for e in imps]
    tied = build_lm_data(same_time, clicks, LMDataConfig(split="time", heldout_fraction=0.25))
    assert tied.train and tied.heldout


def test_reformulations_become_related_examples() -> None:
    """A failed query followed in the same session by a clicked one, both issued by k sessions."""
    imps, clicks = _log(n_sessions=18)
    data = build_lm_data(imps, clicks, LMDataConfig(task="related", heldout_fraction=0.0))
    pairs = {(e.prompt, e.completion): e.weight for e in data.train}
    assert pairs[("protein =>", " protein folding in cells\n")] == 3.0  # sessions 3, 9, 15


def test_only_the_trained_tasks_few_shot_lines_are_replaced() -> None:
    """The saved prompt drops the trained task's shots and keeps the other task's, which it was not taught."""
    imps, clicks = _log(n_sessions=18)
    stock = LMCompleterConfig()
    suggest = build_lm_data(imps, clicks, LMDataConfig(heldout_fraction=0.0), completer=stock)
    assert suggest.prompt == {"examples": [], "related_examples": stock.related_examples}
    assert suggest.train[0].header == "Search queries:\n"
    related = build_lm_data(imps, clicks, LMDataConfig(task="related", heldout_fraction=0.0), completer=stock)
    assert related.prompt == {"examples": stock.examples, "related_examples": []}
    kept = build_lm_data(imps, clicks, LMDataConfig(heldout_fraction=0.0, prompt_examples=None), completer=stock)
    assert kept.prompt == {"examples": stock.examples, "related_examples": stock.related_examples}
    assert "- crispr gene editing in mice\n" in kept.train[0].header


def test_prefix_examples_follow_the_servers_prompt() -> None:
    lm = LMCompleter()
    ex = suggest_examples("protein folding in cells", 4.0, lm)
    assert [(e.prompt, e.completion) for e in ex] == [
        ("-", " protein folding in cells\n"),
        ("- protein", " folding in cells\n"),
        ("- protein folding", " in cells\n"),
        ("- protein folding in", " cells\n"),
    ]
    header, tail, heal, _ = lm._prompt("protein fol", "complete")
    assert ex[0].header == header and tail == ex[1].prompt and ex[1].completion.startswith(heal)
    assert all(e.weight == 4.0 for e in ex)
    # 'line' (the default) keeps the first: every later example is the same text, so under the causal mask its
    # completion tokens see exactly the prompt they see in the line, whose labels cover them
    (line,) = suggest_examples("protein folding in cells", 4.0, lm, every=False)
    assert line == ex[0] and all(e.prompt + e.completion == line.prompt + line.completion for e in ex)
    imps, clicks = _log()
    lines = build_lm_data(imps, clicks, LMDataConfig(heldout_fraction=0.0))
    every = build_lm_data(imps, clicks, LMDataConfig(heldout_fraction=0.0, suggest_examples="prefixes"))
    assert {e.completion for e in lines.train} == {e.completion for e in every.train if e.prompt == "-"}
    assert len(every.train) > len(lines.train) == lines.stats["allowed_queries"]


def test_labels_mask_the_prompt_and_keep_eos(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from tests.tiny_lm import build_byte_bpe_tokenizer

    tok = AutoTokenizer.from_pretrained(build_byte_bpe_tokenizer(tmp_path, [*POPULAR, "Search queries:"]))
    assert tok.pad_token_id == tok.eos_token_id  # as SmolLM2: padding must not be found by its id
    short, long = (
        LMExample("Search queries:\n", "-", " protein\n", 1.0),
        suggest_examples(POPULAR[0], 2.0, LMCompleter())[0],
    )
    batch = collate([encode(tok, short, 256), encode(tok, long, 256)], tok.pad_token_id)
    for row, ex in enumerate([short, long]):
        n_prompt = len(tok(ex.header)["input_ids"]) + len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
        n_comp = len(tok(ex.completion, add_special_tokens=False)["input_ids"]) + 1
        labels, ids = batch["labels"][row].tolist(), batch["input_ids"][row].tolist()
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt : n_prompt + n_comp] == ids[n_prompt : n_prompt + n_comp]
        assert labels[n_prompt + n_comp - 1] == tok.eos_token_id  # the EOS that ends the completion is learnt
        assert all(v == -100 for v in labels[n_prompt + n_comp :])  # padding (the same id as EOS) is not
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    cut = encode(tok, LMExample("Search queries:\n" * 20, "-", " protein\n", 1.0), 16)
    assert len(cut[0]) == 16 and cut[1][-1] == tok.eos_token_id and cut[1][0] == -100


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        yield
    finally:
        shutdown_ray()


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny-base"), ["Search queries:\n- " + q for q in POPULAR])


@pytest.mark.slow
def test_train_on_ray_lowers_heldout_loss_and_registers(local_ray: None, tiny_base: Path, tmp_path: Path) -> None:
    from models.causal_lm import LMConfig, load_lm
    from models.registry import Registry
    from training.lm_train import LMTrainConfig, train_lm

    imps, clicks = _log(n_sessions=24)
    data = build_lm_data(imps, clicks, LMDataConfig(split="session", heldout_fraction=0.3))
    assert data.heldout
    cfg = LMTrainConfig(base=str(tiny_base), lora=False, learning_rate=5e-3, max_steps=200, batch_size=8,
                        storage_path=str(tmp_path / "runs"))  # fmt: skip
    reg = Registry(tmp_path / "registry")
    trained = train_lm(data, cfg, reg)
    m = trained.metrics
    assert m["heldout_loss_after"] < 0.7 * m["heldout_loss_before"], m
    assert m["step"] == 200 and m["tokens_per_s"] > 0 and m["seconds_per_epoch"] > 0
    card = reg.card("lm", trained.version)
    assert card.data_hash == data.data_hash and card.metrics["heldout_loss_before"] == m["heldout_loss_before"]
    model, tok, _ = load_lm(LMConfig(model=str(trained.path), device="cpu"))
    assert tok.eos_token_id is not None and model.config.vocab_size == len(tok)
    # served unchanged: the suggester's own completer, prompt and all, now completes the learnt queries
    # (12 tokens: the tiny tokenizer needs over 8 for the rest of the line, and a line cut by the budget loses its
    # last word)
    lm_cfg = LMConfig(model=str(trained.path), device="cpu")
    completer = LMCompleter(LMCompleterConfig(lm=lm_cfg, nice=0, max_new_tokens=12))
    tops = [c[0].text for c in completer.complete(["protein fol", "insulin "])]
    assert tops == ["protein folding in cells", "insulin resistance in mice"]


@pytest.mark.slow
def test_lora_resume_continues_the_step_count(local_ray: None, tiny_base: Path, tmp_path: Path) -> None:
    from models.causal_lm import LMConfig, load_lm
    from training.lm_train import LMTrainConfig, fit_lm

    imps, clicks = _log()
    data = build_lm_data(imps, clicks, LMDataConfig(split="session"))
    cfg = LMTrainConfig(base=str(tiny_base), lora=True, lora_r=4, max_steps=2, batch_size=4,
                        storage_path=str(tmp_path / "runs"))  # fmt: skip
    first, ckpt = fit_lm(data, cfg)
    assert first["step"] == 2 and first["start_step"] == 0
    second, ckpt2 = fit_lm(data, cfg.model_copy(update={"max_steps": 4, "resume_from": ckpt}))
    assert second["start_step"] == 2 and second["step"] == 4
    assert second["heldout_loss_before"] == first["heldout_loss_before"]
    with pytest.raises(RuntimeError, match="checkpoint is at step 4"):
        fit_lm(data, cfg.model_copy(update={"max_steps": 4, "resume_from": ckpt2}))
    state = json.dumps(sorted(p.name for p in Path(ckpt2).iterdir()))
    assert "model" in state
    model, _, _ = load_lm(LMConfig(model=str(Path(ckpt2) / "model"), device="cpu"))
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged: served as a plain model


@pytest.fixture(scope="module")
def logged_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic log (dated now: retention never prunes it) in JSONL files, and an app config naming them."""
    import yaml

    from logs.clicklog import JsonlClickLog
    from logs.querylog import JsonlQueryLog

    root = tmp_path_factory.mktemp("lm-cli")
    imps, clicks = _log(n_sessions=18)
    shift = datetime.now(UTC) - timedelta(days=1) - T0
    qlog = JsonlQueryLog(root / "querylog")
    for e in imps:
        qlog.append(e.model_copy(update={"ts": e.ts + shift}))
    qlog.close()
    clog = JsonlClickLog(root / "clicklog")
    clog.append_many([c.model_copy(update={"ts": c.ts + shift, "received_at": c.received_at + shift}) for c in clicks])
    app_cfg = {"data_dir": str(root), "store": "embedded", "reranker": {"model": None}, "summarizer": None}
    (root / "app.yaml").write_text(yaml.safe_dump(app_cfg))
    return root


def test_cli_errors_are_clear(logged_app: Path) -> None:
    from typer.testing import CliRunner

    from sift.cli import app

    cfg = ["train", "lm", "--config", str(logged_app / "app.yaml"), "--registry", str(logged_app / "reg")]
    bad = CliRunner().invoke(app, [*cfg, "--task", "poetry"])
    assert bad.exit_code == 2 and "--task must be suggest, related or doc2query" in bad.output
    none = CliRunner().invoke(app, [*cfg, "--min-sessions", "50"])
    assert none.exit_code == 1 and "no suggest examples survive the privacy filters" in none.output
    gone = CliRunner().invoke(app, [*cfg, "--resume", str(logged_app / "nope")])
    assert gone.exit_code == 2 and "no such checkpoint folder" in gone.output
    no_index = CliRunner().invoke(app, [*cfg, "--task", "doc2query", "--index", "docs"])
    assert no_index.exit_code == 2 and "index 'docs' does not exist" in no_index.output, no_index.output
    (logged_app / "bad.yaml").write_text("train: {lora_rank: 4}\n")
    bad_file = CliRunner().invoke(app, [*cfg, "--lm-config", str(logged_app / "bad.yaml")])
    assert bad_file.exit_code == 2 and "lora_rank" in bad_file.output


@pytest.mark.slow
def test_cli_trains_and_registers(local_ray: None, tiny_base: Path, logged_app: Path) -> None:
    from typer.testing import CliRunner

    from models.registry import Registry
    from sift.cli import app

    reg = logged_app / "reg"
    job = {"data": {"task": "related", "split": "session"}, "train": {"lora_r": 2, "max_steps": 9, "batch_size": 4}}
    (logged_app / "lm.yaml").write_text(json.dumps(job))  # JSON is YAML
    args = ["train", "lm", "--lm-config", str(logged_app / "lm.yaml"), "--config", str(logged_app / "app.yaml")]
    args += ["--registry", str(reg), "--base", str(tiny_base), "--max-steps", "3"]  # the flag wins over the file
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    line = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
    assert line["kind"] == "lm" and line["step"] == 3 and "heldout_loss_after" in line and line["tokens_per_s"] > 0
    card = Registry(reg).card("lm", line["version"])
    assert card.config["task"] == "related" and card.base_model == str(tiny_base)
    assert card.config["train"]["lora"] and card.config["train"]["lora_r"] == 2


def test_rayjob_manifest_runs_a_valid_train_lm_command() -> None:
    """The RayJob's entrypoint parses as `sift train lm` options, on GPU workers with a shared volume."""
    import shlex

    import typer
    import yaml

    from sift.train_cli import train_app

    job = yaml.safe_load((Path(__file__).resolve().parent.parent / "k8s" / "rayjob-train-lm.yaml").read_text())
    assert job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["sift", "train", "lm"]
    cmd = typer.main.get_command(train_app).commands["lm"]  # type: ignore[attr-defined]
    params = cmd.make_context("lm", argv[3:]).params
    assert params["gpu"] and params["workers"] == 2 and params["task"] == "suggest"
    groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpu_group = next(g for g in groups if g["groupName"] == "gpu")
    assert gpu_group["replicas"] >= params["workers"]
    worker = gpu_group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        str(params["storage"]).startswith("/models")
        and {"mountPath": "/models", "name": "models"} in worker["volumeMounts"]
    )


@pytest.mark.slow
def test_cli_doc2query_reads_clicked_documents(local_ray: None, tiny_base: Path, logged_app: Path) -> None:
    """doc2query end to end: the clicked documents' texts come from the store the app config names."""
    import shutil

    from typer.testing import CliRunner

    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from search.stores.embedded import EmbeddedStore
    from sift.cli import app

    root = logged_app.parent / "lm-cli-docs"
    for d in ("querylog", "clicklog"):
        shutil.copytree(logged_app / d, root / d)
    (root / "app.yaml").write_text((logged_app / "app.yaml").read_text().replace(str(logged_app), str(root)))
    corpus = root / "corpus.jsonl"
    texts = {f"doc-{q[:4]}": f"A study of {q}." for q in POPULAR}
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in texts.items()))
    store = EmbeddedStore(root / "indices")
    try:
        IndexingPipeline(store, None, IndexingConfig(embed=False, progress=False)).build(corpus, "docs")
    finally:
        store.close()
    args = ["train", "lm", "--task", "doc2query", "--index", "docs", "--config", str(root / "app.yaml")]
    args += ["--registry", str(root / "reg"), "--base", str(tiny_base), "--max-steps", "2", "--split", "session"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    line = json.loads(next(ln for ln in res.stdout.splitlines() if ln.startswith("{")))
    assert line["task"] == "doc2query" and line["examples_train_examples"] >= 1 and line["step"] == 2
