"""The installed distribution holds every package of the source tree: a wheel (`pip install .`, the container
image) ships only the packages pyproject.toml lists, while the editable install of `make setup` finds them all."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ["sift", "models", "search", "logs", "indexing", "ranking", "serving", "training"]


def source_packages() -> set[str]:
    """Every directory with an __init__.py under the top-level packages, as a dotted name."""
    return {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_pyproject_lists_every_package() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = source_packages()
    assert set(TOP_LEVEL) <= found
    assert found - listed == set(), "packages missing from [tool.setuptools] packages: a wheel would lack them"
