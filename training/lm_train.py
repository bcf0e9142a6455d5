"""Fine-tune the causal LM on examples from the logs (training/lm_data.py), on Ray Train.

Next-token cross-entropy on the completion only: prompt positions and padding are -100 in the labels. The pad
token is EOS for SmolLM2, so labels are built from each example's prompt length and the attention mask, never
from the pad id (that would unlearn the EOS that ends a completion). AdamW, linear warmup then decay, gradient
clipping; full fine-tuning or LoRA (peft, merged into the weights at the end so the server loads a plain model).

The loop runs under `TorchTrainer`: one CPU worker with one torch thread here, N GPU workers on a cluster with
the same code (each worker takes every N-th example; `prepare_model` wraps DDP). Checkpoints hold the trainable
weights, optimizer, schedule and step, so a run resumes where it stopped. The result is registered as an `lm`
version that `models.causal_lm.load_lm` (and so the suggester) loads unchanged.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.causal_lm import DEFAULT_LM, PROMPT_FILE, resolve_lm
from training.lm_data import LMData, LMExample

Encoded = tuple[list[int], list[int], float]  # input ids, labels (-100 on the prompt), example weight
STATE = "state.pt"
MODEL_DIR = "model"


class LMTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(default=DEFAULT_LM, description="Starting weights: HF id or folder of a causal LM.")
    lora: bool = Field(default=True, description="LoRA adapters (peft), merged at the end; False: full fine-tune.")
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    lora_targets: list[str] | str = Field(default="all-linear", description="Modules given adapters (peft).")
    learning_rate: float | None = Field(
        default=None, gt=0, description="Peak AdamW learning rate; None: 3e-4 with LoRA, 5e-5 for a full fine-tune."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the training examples.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps in all.")
    batch_size: int = Field(default=8, ge=1, description="Examples per step and worker.")
    warmup_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="Share of steps spent warming up.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradients are clipped to this global norm.")
    max_length: int = Field(default=256, ge=8, description="Tokens per example; long prompts are cut on the left.")
    heldout_max: int = Field(
        default=1000, ge=1, description="Held-out examples the loss is measured on (a seeded sample when more)."
    )
    checkpoint_every: int = Field(default=100, ge=1, description="Steps between checkpoints (and one at the end).")
    log_every: int = Field(
        default=10, ge=0, description="Steps between progress lines (step, loss, tokens/s, ETA) on stderr; 0: none."
    )
    seed: int = Field(default=0, description="Seeds initialisation and batch order.")
    workers: int = Field(default=1, ge=1, description="Ray Train workers (one per GPU on a cluster).")
    use_gpu: bool = Field(default=False, description="One GPU per worker.")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs Ray reserves per worker.")
    threads_per_worker: int = Field(default=1, ge=1, description="Torch threads per CPU worker.")
    storage_path: str | None = Field(default=None, description="Ray Train run folder (checkpoints); None: a temp dir.")
    resume_from: str | None = Field(default=None, description="A checkpoint folder to continue from (its step).")

    def lr(self) -> float:
        return self.learning_rate or (3e-4 if self.lora else 5e-5)


@dataclass
class TrainedLM:
    version: str
    path: Path
    metrics: dict[str, float]
    checkpoint: str


def encode(tok: Any, ex: LMExample, max_length: int) -> Encoded:
    """Token ids as the server builds them (header with special tokens, prompt tail without) + completion + EOS;
    labels are -100 on every prompt position. Too long: the prompt is cut on the left, the completion kept."""
    head = tok(ex.header, add_special_tokens=True)["input_ids"]
    tail = tok(ex.prompt, add_special_tokens=False)["input_ids"]
    comp = [*tok(ex.completion, add_special_tokens=False)["input_ids"], tok.eos_token_id][: max_length - 1]
    prompt = [*head, *tail][-(max_length - len(comp)) :]
    return [*prompt, *comp], [-100] * len(prompt) + comp, ex.weight


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors; padded label positions come from the attention mask, not from the pad id."""
    import torch

    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y, _) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    labels = labels.masked_fill(mask == 0, -100)
    weights = torch.tensor([w for _, _, w in batch], dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weights": weights}


def example_losses(model: Any, batch: dict[str, Any], device: Any) -> Any:
    """Mean next-token cross-entropy over each example's completion tokens (one value per example)."""
    import torch.nn.functional as F

    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:].to(device)
    ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    live = (labels != -100).float()
    return (ce * live).sum(1) / live.sum(1).clamp(min=1.0)


def heldout_loss(model: Any, data: Sequence[Encoded], pad_id: int, batch_size: int, device: Any) -> float:
    """Weighted mean completion loss over every worker's share of the held-out examples (NaN: none held out)."""
    import torch
    import torch.distributed as dist

    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for i in range(0, len(data), batch_size):
            batch = collate(data[i : i + batch_size], pad_id)
            w = batch["weights"].to(device)
            total[0] += (example_losses(model, batch, device) * w).sum().double()
            total[1] += w.sum().double()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else math.nan


def build_model(path: str, cfg: LMTrainConfig) -> Any:
    """The base causal LM in fp32, with LoRA adapters when configured."""
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_targets,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


def plain_weights(model: Any) -> None:
    """A model loaded from a dequantized GGUF conversion still says `quantization_config: gguf`, and
    transformers refuses to save such a model; its weights are plain fp32, so the marker is dropped."""
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _trainable_state(model: Any) -> dict[str, Any]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def _save(model: Any, tok: Any, state: dict[str, Any], final: bool) -> Any:
    """A Ray checkpoint of the training state; the final one also holds the servable (merged) model."""
    import torch
    from ray.train import Checkpoint

    d = Path(tempfile.mkdtemp(prefix="sift-lm-ckpt-"))
    torch.save({**state, "weights": _trainable_state(model)}, d / STATE)
    if final:
        servable = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        plain_weights(servable)
        servable.save_pretrained(d / MODEL_DIR)
        tok.save_pretrained(d / MODEL_DIR)
    return Checkpoint.from_directory(str(d))


def _restore(loop: dict[str, Any]) -> dict[str, Any] | None:
    """The state of Ray's latest checkpoint for this run (a restarted worker), else of `resume_from`."""
    import ray.train
    import torch

    ckpt = ray.train.get_checkpoint()
    if ckpt is None and loop["config"].get("resume_from"):
        ckpt = ray.train.Checkpoint(loop["config"]["resume_from"])
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        state: dict[str, Any] = torch.load(Path(d) / STATE, weights_only=False)
    return state


@dataclass
class _Run:
    """What one worker's loop needs, set up once (and restored from a checkpoint when resuming)."""

    cfg: LMTrainConfig
    model: Any
    tok: Any
    pad: int
    train: list[Encoded]
    held: list[Encoded]
    params: list[Any]
    opt: Any
    sched: Any
    step: int
    total: int
    per_epoch: int
    before: float
    device: Any
    rank: int
    world: int


def _setup(loop: dict[str, Any]) -> _Run:
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    cfg = LMTrainConfig.model_validate(loop["config"])
    if not cfg.use_gpu:
        torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    tok = AutoTokenizer.from_pretrained(loop["base_path"])
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    train: list[Encoded] = loop["train"][rank::world]
    held_all: list[Encoded] = loop["heldout"]
    if len(held_all) > cfg.heldout_max:  # the loss is a figure, not the training: a sample measures it
        held_all = random.Random(cfg.seed).sample(held_all, cfg.heldout_max)
    held = held_all[rank::world]
    model = build_model(loop["base_path"], cfg)
    state = _restore(loop)
    if state is not None:
        model.load_state_dict(state["weights"], strict=False)
    model = ray.train.torch.prepare_model(model)
    # from the largest share, so every worker takes the same number of steps (DDP needs them in lockstep)
    per_epoch = max(1, math.ceil(math.ceil(len(loop["train"]) / world) / cfg.batch_size))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr(), weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
    before = state["heldout_loss_before"] if state else heldout_loss(model, held, pad, cfg.batch_size, device)
    return _Run(cfg, model, tok, pad, train, held, params, opt, sched, step, total, per_epoch, before, device,
                rank, world)  # fmt: skip


def _batch(run: _Run) -> dict[str, Any]:
    """The batch for `run.step`: epochs are shuffled by seed, so a resumed run sees the batches it would have.
    Batches are always full: the last one of an epoch (and a smaller share's) wraps around to the start."""
    epoch, pos = divmod(run.step, run.per_epoch)
    order = list(range(len(run.train)))
    random.Random(run.cfg.seed * 1_000_003 + epoch).shuffle(order)
    size = run.cfg.batch_size
    return collate([run.train[order[(pos * size + j) % len(order)]] for j in range(size)], run.pad)


def _train_loop(loop: dict[str, Any]) -> None:
    """One Ray Train worker: its share of the examples, the shared schedule, checkpoints from rank 0."""
    import ray.train
    import torch

    run = _setup(loop)
    cfg, model = run.cfg, run.model
    if run.step >= run.total:
        raise ValueError(f"the checkpoint is at step {run.step}: raise --max-steps (or --epochs) past it to resume")
    start_step, tokens, losses, t0 = run.step, 0, [], time.perf_counter()
    model.train()
    while run.step < run.total:
        batch = _batch(run)
        w = batch["weights"].to(run.device)
        loss = (example_losses(model, batch, run.device) * w).sum() / w.sum()
        run.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
        run.opt.step()
        run.sched.step()
        run.step += 1
        tokens += int(batch["attention_mask"].sum())
        losses.append(loss.item())
        if cfg.log_every and run.rank == 0 and run.step % cfg.log_every == 0:
            _progress(run, start_step, tokens, losses, t0)
        final = run.step == run.total
        if run.step % cfg.checkpoint_every and not final:
            continue
        elapsed = max(time.perf_counter() - t0, 1e-9)
        metrics = {
            "step": run.step,
            "start_step": start_step,
            "train_loss": sum(losses) / len(losses),
            "heldout_loss_before": run.before,
            "tokens_per_s": tokens * run.world / elapsed,
            "seconds_per_epoch": elapsed * run.per_epoch / (run.step - start_step),
        }
        if final:
            metrics["heldout_loss_after"] = heldout_loss(model, run.held, run.pad, cfg.batch_size, run.device)
        state = {"step": run.step, "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict()}
        state["heldout_loss_before"] = run.before
        core = getattr(model, "module", model)  # DDP wraps the model on several workers
        ckpt = _save(core, run.tok, state, final) if run.rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt)
        if ckpt is not None:
            shutil.rmtree(ckpt.path, ignore_errors=True)  # Ray has persisted its copy
        losses = []


def _progress(run: _Run, start_step: int, tokens: int, losses: list[float], t0: float) -> None:
    """One line a long CPU run can be followed by (Ray forwards a worker's stderr to the driver)."""
    done = run.step - start_step
    elapsed = max(time.perf_counter() - t0, 1e-9)
    eta = elapsed / done * (run.total - run.step)
    recent = losses[-run.cfg.log_every :]
    print(
        f"lm train: step {run.step}/{run.total} loss {sum(recent) / len(recent):.4f} "
        f"{tokens * run.world / elapsed:.0f} tokens/s, ETA {eta / 60:.1f} min",
        file=sys.stderr,
        flush=True,
    )


def _scaling(cfg: LMTrainConfig) -> Any:
    from ray.train import ScalingConfig

    resources: dict[str, float] = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    return ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=resources)


def _first_error(exc: BaseException) -> str:
    """The innermost cause's message (a worker's ValueError, OSError...), in one line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def fit_lm(data: LMData, cfg: LMTrainConfig) -> tuple[dict[str, float], str]:
    """Run the loop under TorchTrainer (Ray must be initialised); (last metrics, final checkpoint folder)."""
    from ray.train import CheckpointConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from transformers import AutoTokenizer

    if len(data.train) < cfg.workers:
        raise ValueError(
            f"{len(data.train)} {data.task} training example(s) for {cfg.workers} workers (stats: {data.stats})"
        )
    base_path = resolve_lm(cfg.base)
    tok = AutoTokenizer.from_pretrained(base_path)
    if tok.eos_token_id is None:
        raise ValueError(f"{cfg.base}: the tokenizer has no EOS token to end completions with")
    storage = cfg.storage_path or tempfile.mkdtemp(prefix="sift-lm-train-")
    loop = {
        "config": cfg.model_dump(),
        "base_path": base_path,
        "train": [encode(tok, e, cfg.max_length) for e in data.train],
        "heldout": [encode(tok, e, cfg.max_length) for e in data.heldout],
    }
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=loop,
        scaling_config=_scaling(cfg),
        run_config=RunConfig(
            name=f"lm-{data.task}-{data.data_hash[:10]}-{int(time.time())}",
            storage_path=str(Path(storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:  # the worker's exception, without Ray's pages of context
        raise RuntimeError(_first_error(exc)) from exc
    if result.checkpoint is None:
        raise RuntimeError("training ended without a checkpoint")
    metrics = result.metrics or {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}, result.checkpoint.path


def train_lm(data: LMData, cfg: LMTrainConfig, registry: Any) -> TrainedLM:
    """Fine-tune on Ray Train and register the merged model as a new `lm` version (nothing is made live)."""
    from ray.train import Checkpoint

    from models.registry import ModelCard, version_stamp

    metrics, ckpt_path = fit_lm(data, cfg)
    metrics.update({f"examples_{k}": float(v) for k, v in data.stats.items()})
    card = ModelCard(
        kind="lm",
        version=version_stamp(data.data_hash, f"lm-{data.task}"),
        base_model=cfg.base,
        data_hash=data.data_hash,
        metrics=metrics,
        config={"task": data.task, "train": cfg.model_dump(), "prompt": data.prompt, "data": data.config},
        notes=f"Causal LM fine-tuned for `{data.task}` on the click log (`sift train lm`).",
    )

    def write(out: Path) -> None:
        with Checkpoint(ckpt_path).as_directory() as d:
            shutil.copytree(Path(d) / MODEL_DIR, out, dirs_exist_ok=True)
        if data.prompt:  # served with the prompt it learnt (LMCompleter reads it on load)
            (out / PROMPT_FILE).write_text(json.dumps(data.prompt, indent=1))

    path = registry.register(card, write)
    return TrainedLM(card.version, path, metrics, ckpt_path)
