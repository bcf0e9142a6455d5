"""The suggester's LM following the model registry: `lm.model: registry:lm` serves whatever `lm` version is live.

`sift models promote lm` moves the registry's pointer; the watcher (models/live.py) loads and warms the new
version beside the old one and swaps them in one assignment, so the suggestion endpoint keeps answering while
a version is promoted (in flight completions finish on the old model). A version that fails to load is logged
and the old one keeps serving. Any other model value (a path, an HF id, `registry:lm@VERSION`) is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.live import LiveModel
from models.registry import REF_PREFIX
from search.suggest.lm_completer import Completion, LMCompleter, LMCompleterConfig, Task


class LiveCompleter:
    """A `Completer` whose model is the registry's live `lm` version; no live version: no LM candidates."""

    def __init__(self, config: LMCompleterConfig, registry_root: Path | str, watch_s: float = 2.0) -> None:
        self.config = config
        self.live: LiveModel[LMCompleter] = LiveModel(config.lm.model, self._load, registry_root, watch_s)

    def _load(self, path: str) -> LMCompleter:
        lm = LMCompleter(self.config.model_copy(update={"lm": self.config.lm.model_copy(update={"model": path})}))
        lm.warm_up()
        lm.complete(["warm up"])  # the first generate call is slow: pay it before the swap, not on a request
        return lm

    @property
    def version(self) -> str | None:
        return self.live.current[0]

    def warm_up(self) -> None:
        self.live.warm_up()

    def complete(self, texts: Sequence[str], task: Task = "complete") -> list[list[Completion]]:
        self.live.warm_up()
        _, lm = self.live.current  # one read: a swap mid-call cannot mix two versions
        return lm.complete(texts, task) if lm is not None else [[] for _ in texts]

    def close(self) -> None:
        self.live.close()


def make_completer(config: LMCompleterConfig, registry_root: Path | str | None = None) -> LMCompleter | LiveCompleter:
    """A `LiveCompleter` for a followed registry reference (`registry:lm`), else a plain `LMCompleter`."""
    ref = config.lm.model
    if ref.startswith(REF_PREFIX) and "@" not in ref:
        if registry_root is None:
            raise ValueError(f"{ref!r} needs a model registry (Settings.registry_dir)")
        return LiveCompleter(config, registry_root)
    return LMCompleter(config)
