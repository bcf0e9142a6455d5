"""Fusion against hand-computed scores."""

from __future__ import annotations

import pytest

from ranking.fusion import linear, minmax, ranked, rrf
from search.documents import Hit


def hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(id=i, score=s) for i, s in pairs]


LEX = hits(("a", 12.0), ("b", 9.0), ("c", 3.0))
DEN = hits(("c", 0.95), ("d", 0.90), ("a", 0.85))


def test_rrf_by_hand() -> None:
    s = rrf([LEX, DEN], k=60)
    assert s["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert s["b"] == pytest.approx(1 / 62)
    assert s["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert s["d"] == pytest.approx(1 / 62)
    # a and c tie exactly; ties break by id, so the order is deterministic.
    assert [d for d, _ in ranked(s)] == ["a", "c", "b", "d"]


def test_rrf_k_changes_weighting() -> None:
    s = rrf([LEX, DEN], k=1)
    assert s["a"] == pytest.approx(1 / 2 + 1 / 4)
    assert s["d"] == pytest.approx(1 / 3)


def test_minmax_and_linear_by_hand() -> None:
    assert minmax(LEX) == {"a": 1.0, "b": pytest.approx(6 / 9), "c": 0.0}
    assert minmax(hits(("x", 2.0), ("y", 2.0))) == {"x": 1.0, "y": 1.0}
    assert minmax([]) == {}
    s = linear(LEX, DEN, alpha=0.3)
    assert s["a"] == pytest.approx(0.3 * 0.0 + 0.7 * 1.0)
    assert s["b"] == pytest.approx(0.7 * (6 / 9))
    assert s["c"] == pytest.approx(0.3 * 1.0)
    assert s["d"] == pytest.approx(0.3 * 0.5)
    assert [d for d, _ in ranked(s)] == ["a", "b", "c", "d"]
    assert linear(LEX, DEN, alpha=1.0)["c"] == pytest.approx(1.0)
