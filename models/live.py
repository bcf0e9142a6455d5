"""A model that follows the registry's live pointer while it serves (hot reload without a restart).

A model reference is a path or HF id (fixed for the life of the process) or `registry:KIND` (whatever version
is live, followed) or `registry:KIND@VERSION` (pinned). For a followed reference a watcher thread polls the
kind's LIVE.json; on a change it loads and warms the new version *before* swapping the (version, model) pair in
one assignment, so a request always reads one consistent pair, requests in flight finish on the old model, and
no request waits for a load. A version that fails to load is logged and the old one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from models.registry import REF_PREFIX, LiveWatcher, Registry

log = logging.getLogger("sift.models")
M = TypeVar("M")


class LiveModel(Generic[M]):
    """`current` → (version, model); `model` is None while a followed kind has no live version."""

    def __init__(
        self, ref: str, load: Callable[[str], M], registry_root: Path | str | None = None, watch_s: float = 2.0
    ) -> None:
        self.ref = ref
        self.load = load
        self.registry = Registry(registry_root) if registry_root is not None else None
        self.watch_s = watch_s
        self._current: tuple[str | None, M | None] = (None, None)
        self._watcher: LiveWatcher | None = None
        self._listeners: list[Callable[[str | None, M | None], None]] = []
        self._lock = threading.Lock()
        self._warm = False

    @property
    def follows(self) -> bool:
        return self.ref.startswith(REF_PREFIX) and "@" not in self.ref

    @property
    def kind(self) -> str:
        return self.ref[len(REF_PREFIX) :].partition("@")[0]

    @property
    def current(self) -> tuple[str | None, M | None]:
        return self._current

    def add_listener(self, fn: Callable[[str | None, M | None], None]) -> None:
        """Called after every swap with the new (version, model): for holders of the model, e.g. the service."""
        self._listeners.append(fn)

    def warm_up(self) -> None:
        """Load what the reference names now (idempotent); start following the pointer when it is followed."""
        if self._warm:  # every scoring call passes here: no lock once loaded
            return
        with self._lock:
            if self._warm:
                return
            if not self.ref.startswith(REF_PREFIX):
                self._current = (self.ref, self.load(self.ref))
            else:
                if self.registry is None:
                    raise ValueError(f"{self.ref!r} needs a model registry (Settings.registry_dir)")
                if not self.follows:
                    path = self.registry.resolve(self.ref)
                    self._current = (path.name, self.load(str(path)))
                else:
                    live = self.registry.live_path(self.kind)
                    self._current = (live.name, self.load(str(live))) if live is not None else (None, None)
                    self._watcher = LiveWatcher(self.registry, self.kind, self._swap)
                    self._watcher.current = self._current[0]
                    if self.watch_s > 0:
                        self._watcher.start(self.watch_s)
            self._warm = True

    def check(self) -> bool:
        """Look at the pointer now (what the watcher does every `watch_s`); True when the model changed."""
        return self._watcher.check() if self._watcher is not None else False

    def _swap(self, version: str | None, path: Path | None) -> None:
        model = self.load(str(path)) if path is not None else None  # load and warm first; then one assignment
        self._current = (version, model)
        log.warning("live %s is now %s", self.kind, version or "none")
        for fn in self._listeners:
            fn(version, model)

    @property
    def errors(self) -> list[str]:
        return self._watcher.errors if self._watcher is not None else []

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
