"""The generated reference pages (docs/reference/) match what the code generates now."""

from __future__ import annotations

from pathlib import Path

import pytest

from sift import reference_docs


@pytest.mark.parametrize("name", sorted(reference_docs.PAGES))
def test_reference_page_is_current(name: str) -> None:
    committed = reference_docs.DOCS / name
    assert committed.exists(), f"docs/reference/{name} is missing: run `make docs`"
    assert committed.read_text() == reference_docs.PAGES[name](), f"docs/reference/{name} is stale: run `make docs`"


def test_pages_cover_every_command_route_and_setting() -> None:
    """Spot checks that the generators walk the whole surface, not just the top level."""
    cli = reference_docs.cli_reference()
    assert "## `sift clicks simulate`" in cli and "`--sessions`" in cli and "## `sift es start`" in cli
    api = reference_docs.api_reference()
    assert "## `POST /v1/search`" in api and "## `GET /v1/suggest`" in api and "## SearchRequest" in api
    config = reference_docs.config_reference()
    assert "`search.retrieval.rrf_k`" in config and "`security.rate_limits.per_key`" in config
    assert "`embedder.model`" in config  # in both the serving and the indexing config


def test_check_mode_names_a_stale_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(reference_docs, "DOCS", tmp_path)
    assert reference_docs.main([]) == 0  # writes all pages
    (tmp_path / "cli.md").write_text("old\n")
    assert reference_docs.main(["--check"]) == 1
    assert "docs/reference/cli.md is stale" in capsys.readouterr().err
