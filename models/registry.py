"""The model registry: a folder per model kind and version, and a live pointer per kind.

    <root>/<kind>/<version>/          weights and config as the model's library writes them, plus
                           card.json  what it is: base model, training-data hash, metrics, training config
                           README.md  the same as a short model card for people
    <root>/<kind>/LIVE.json           {"live": version | null, "history": [earlier live versions, newest last]}

Why a pointer file: promotion and rollback are one atomic `os.replace` of LIVE.json, which running servers
watch (`LiveWatcher`), so a new version reaches them without a restart and a reader never sees half a write.
Each read-modify-write of the pointer (set_live, rollback) holds the kind's lock (an flock on `.LIVE.lock`
beside it, for other processes, and a thread lock, for this one), so concurrent promotions lose no history.
A version folder is written once (to a temporary name, then renamed) and never edited: a changed model is a
new version. Promotion is gated (`Registry.promote`): the candidate must beat the live version (or the
baseline when nothing is live) on one evaluation by a printed margin, else nothing changes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["encoder", "reranker", "ranker", "lm"]
KINDS: tuple[str, ...] = ("encoder", "reranker", "ranker", "lm")
CARD = "card.json"
LIVE = "LIVE.json"
LIVE_LOCK = ".LIVE.lock"  # a dot name: never taken for a version
REF_PREFIX = "registry:"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelCard(BaseModel):
    """What a version is and how it was made; written beside its weights."""

    # NaN metrics (e.g. nothing held out) must read back: JSON null would not validate as a float
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    kind: str = Field(description="encoder, reranker, ranker or lm.")
    version: str = Field(description="Unique within the kind: a data-hash prefix and the training time.")
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    base_model: str | None = Field(default=None, description="Weights it started from (HF id or path).")
    data_hash: str = Field(description="sha256 of the training examples: same data, same hash.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Figures measured at training time.")
    config: dict[str, Any] = Field(default_factory=dict, description="The training settings used.")
    notes: str = Field(default="", description="Free text for the model card.")


class LivePointer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    live: str | None = None
    history: list[str] = Field(default_factory=list, description="Earlier live versions, newest last.")
    reason: str = ""
    updated: str = ""


@dataclass(frozen=True)
class Promotion:
    """The gate's decision with both figures, so the command can print why."""

    promoted: bool
    kind: str
    version: str
    live: str | None
    candidate_score: float
    live_score: float
    margin: float
    metric: str
    reason: str


class RegistryError(ValueError):
    """A request the registry refuses (unknown kind or version, duplicate version): a user error, not a bug."""


def version_stamp(data_hash: str, prefix: str) -> str:
    """A readable unique version: kind prefix, data-hash prefix, UTC time, and a short random tail."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{data_hash[:10]}-{stamp}-{uuid.uuid4().hex[:4]}"


class Registry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- reading -------------------------------------------------------------------------------------------
    def _kind_dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise RegistryError(f"unknown model kind {kind!r}; kinds: {', '.join(KINDS)}")
        return self.root / kind

    def path(self, kind: str, version: str) -> Path:
        p = self._kind_dir(kind) / version
        if not _VERSION.match(version) or not (p / CARD).is_file():
            known = ", ".join(c.version for c in self.versions(kind)) or "none"
            raise RegistryError(f"no {kind} version {version!r} in {self.root} (versions: {known})")
        return p

    def card(self, kind: str, version: str) -> ModelCard:
        return ModelCard.model_validate_json((self.path(kind, version) / CARD).read_text())

    def versions(self, kind: str) -> list[ModelCard]:
        """Every registered version of `kind`, oldest first."""
        d = self._kind_dir(kind)
        if not d.is_dir():
            return []
        cards = []
        for p in d.iterdir():
            if p.name.startswith(".") or not (p / CARD).is_file():
                continue  # a registration in progress, or the pointer
            try:
                cards.append(ModelCard.model_validate_json((p / CARD).read_text()))
            except ValueError as exc:
                raise RegistryError(f"unreadable model card {p / CARD}: {exc}") from exc
        return sorted(cards, key=lambda c: (c.created, c.version))

    def pointer(self, kind: str) -> LivePointer:
        f = self._kind_dir(kind) / LIVE
        return LivePointer.model_validate_json(f.read_text()) if f.is_file() else LivePointer()

    def live(self, kind: str) -> str | None:
        return self.pointer(kind).live

    def live_path(self, kind: str) -> Path | None:
        v = self.live(kind)
        return self.path(kind, v) if v else None

    def resolve(self, ref: str) -> Path:
        """`registry:KIND` (the live version) or `registry:KIND@VERSION` → that version's folder."""
        if not ref.startswith(REF_PREFIX):
            raise RegistryError(f"{ref!r} is not a registry reference ({REF_PREFIX}KIND[@VERSION])")
        kind, _, version = ref[len(REF_PREFIX) :].partition("@")
        if version:
            return self.path(kind, version)
        live = self.live_path(kind)
        if live is None:
            raise RegistryError(f"no live {kind} in {self.root}: promote one with `sift models promote {kind} V`")
        return live

    # -- writing -------------------------------------------------------------------------------------------
    def register(self, card: ModelCard, write: Callable[[Path], None]) -> Path:
        """Create version `card.version` of `card.kind`: `write(folder)` fills a temporary folder, which is then
        renamed into place with the card and model card. A failed `write` leaves nothing behind."""
        kind_dir = self._kind_dir(card.kind)
        if not _VERSION.match(card.version):
            raise RegistryError(f"bad version name {card.version!r}")
        final = kind_dir / card.version
        if final.exists():
            raise RegistryError(f"{card.kind} version {card.version} already exists: versions are written once")
        kind_dir.mkdir(parents=True, exist_ok=True)
        tmp = kind_dir / f".tmp-{card.version}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            write(tmp)
            (tmp / CARD).write_text(card.model_dump_json(indent=2))
            (tmp / "README.md").write_text(model_card_text(card))
            _fsync_tree(tmp)
            try:
                os.rename(tmp, final)
            except OSError as exc:  # another process registered the same version meanwhile
                if final.exists():
                    raise RegistryError(f"{card.kind} version {card.version} already exists") from exc
                raise
            _fsync_dir(kind_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def _write_pointer(self, kind: str, ptr: LivePointer) -> None:
        d = self._kind_dir(kind)
        d.mkdir(parents=True, exist_ok=True)
        ptr.updated = datetime.now(UTC).isoformat(timespec="seconds")
        tmp = d / f".{LIVE}.{uuid.uuid4().hex[:6]}"
        with open(tmp, "w") as f:
            f.write(ptr.model_dump_json(indent=2))
            f.flush()
            os.fsync(f.fileno())  # after a crash the pointer is the old one or the new one, never empty
        os.replace(tmp, d / LIVE)
        _fsync_dir(d)

    @contextmanager
    def _pointer_lock(self, kind: str) -> Iterator[None]:
        """Hold `kind`'s pointer lock: the thread lock of this process, then the flock other processes see (an
        flock is released when its descriptor closes, so a crashed holder never leaves it taken)."""
        d = self._kind_dir(kind)
        d.mkdir(parents=True, exist_ok=True)
        key = str(d.resolve())
        with _LOCKS_GUARD:
            lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
        with lock:
            fd = os.open(d / LIVE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def set_live(self, kind: str, version: str, reason: str, expect_live: tuple[str | None] | None = None) -> None:
        """Point `kind` at `version` (no gate: `promote` is the gated way in). `expect_live`, the live version
        boxed (None is a version: nothing live), makes it a compare-and-swap: RegistryError if another is live."""
        self.path(kind, version)
        with self._pointer_lock(kind):
            ptr = self.pointer(kind)
            if expect_live is not None and ptr.live not in (expect_live[0], version):
                raise RegistryError(f"the live {kind} changed meanwhile (now {ptr.live}); nothing changed")
            if ptr.live == version:
                return
            history = [*ptr.history, ptr.live] if ptr.live else list(ptr.history)
            self._write_pointer(kind, LivePointer(live=version, history=history, reason=reason))

    def promote(
        self,
        kind: str,
        version: str,
        evaluate: Callable[[Path | None], float],
        margin: float,
        metric: str = "ndcg@10",
    ) -> Promotion:
        """Make `version` live only if `evaluate(its folder)` beats `evaluate(live folder or None)` by `margin`.

        `evaluate(None)` scores the baseline (no model of this kind, or the default one): the first promotion
        must beat serving without it. Both are scored in this call, on the same evaluation."""
        cand_path = self.path(kind, version)
        live = self.live(kind)
        if live == version:
            return Promotion(False, kind, version, live, math_nan(), math_nan(), margin, metric, "already live")
        cand = float(evaluate(cand_path))
        base = float(evaluate(self.path(kind, live) if live else None))
        against = f"live {live}" if live else "the baseline (none live)"
        if cand >= base + margin:
            reason = f"{metric} {cand:.4f} vs {base:.4f} for {against}: {cand - base:+.4f} >= margin {margin}"
            self.set_live(kind, version, f"promoted: {reason}", expect_live=(live,))  # the one it beat
            return Promotion(True, kind, version, live, cand, base, margin, metric, reason)
        reason = f"{metric} {cand:.4f} vs {base:.4f} for {against}: {cand - base:+.4f} < margin {margin}"
        reason += "; nothing changed"
        return Promotion(False, kind, version, live, cand, base, margin, metric, reason)

    def rollback(self, kind: str) -> str | None:
        """Make the previous live version live again (None: back to no model); the version left is not deleted."""
        if not self._kind_dir(kind).is_dir():  # nothing registered: no lock file to create
            raise RegistryError(f"no live {kind} to roll back")
        with self._pointer_lock(kind):
            ptr = self.pointer(kind)
            if ptr.live is None:
                raise RegistryError(f"no live {kind} to roll back")
            prev = ptr.history[-1] if ptr.history else None
            if prev is not None:
                self.path(kind, prev)  # never point at a folder that is gone
            self._write_pointer(
                kind, LivePointer(live=prev, history=ptr.history[:-1], reason=f"rolled back from {ptr.live}")
            )
        return prev


_THREAD_LOCKS: dict[str, threading.Lock] = {}  # kind folder → its pointer's lock in this process
_LOCKS_GUARD = threading.Lock()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Weights and card on disk before the rename makes them a version."""
    for p in sorted(root.rglob("*"), reverse=True):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            _fsync_dir(p)
    _fsync_dir(root)


def math_nan() -> float:
    return float("nan")


def model_card_text(card: ModelCard) -> str:
    metrics = "\n".join(f"- {k}: {v}" for k, v in sorted(card.metrics.items())) or "- (none)"
    cfg = json.dumps(card.config, indent=2, sort_keys=True, default=str)
    return (
        f"# {card.kind} {card.version}\n\nCreated {card.created}; started from `{card.base_model}`.\n\n"
        f"Training data sha256: `{card.data_hash}`\n\n## Metrics at training time\n{metrics}\n\n"
        f"## Training config\n```json\n{cfg}\n```\n\n{card.notes}\n"
    )


class LiveWatcher:
    """Polls a kind's live pointer; `check()` returns the new version folder when it changed, else None.

    Servers call it from a background thread (`start`) and load the new weights before swapping them in, so
    requests in flight finish on the old model and no request waits on a load."""

    def __init__(self, registry: Registry, kind: str, on_change: Callable[[str | None, Path | None], None]) -> None:
        self.registry = registry
        self.kind = kind
        self.on_change = on_change
        self.current: str | None = registry.live(kind)
        self.failed: tuple[str | None] | None = None  # the version whose load failed, boxed (None is a version)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def check(self) -> bool:
        live = self.registry.live(self.kind)
        if live == self.current or (self.failed is not None and live == self.failed[0]):
            return False
        try:
            path = self.registry.path(self.kind, live) if live else None
            self.on_change(live, path)
        except Exception:
            self.failed = (live,)  # not retried until the pointer moves again: a load is expensive
            raise
        self.current, self.failed = live, None
        return True

    def start(self, interval_s: float) -> None:
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check()
                except Exception as exc:  # a bad version must not kill the watcher; the old model keeps serving
                    self.errors = [*self.errors[-19:], f"{type(exc).__name__}: {exc}"]

        self._thread = threading.Thread(target=loop, name=f"registry-watch-{self.kind}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
