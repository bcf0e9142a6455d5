"""The embedded store's partial sort picks the same top documents as a full sort of every chunk."""

from __future__ import annotations

import numpy as np
import pytest

from search.stores.embedded import _best_per_doc


def full_sort(sims: np.ndarray, rids: np.ndarray, k: int) -> dict[int, float]:
    best: dict[int, float] = {}
    for i in np.argsort(-sims, kind="stable"):
        if not np.isfinite(sims[i]):
            break
        best.setdefault(int(rids[i]), float(sims[i]))
        if len(best) >= k:
            break
    return best


@pytest.mark.parametrize("chunks_per_doc", [1, 3, 50])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_same_as_full_sort(chunks_per_doc: int, k: int) -> None:
    rng = np.random.default_rng(k * 100 + chunks_per_doc)
    n_docs = 400
    rids = np.repeat(np.arange(n_docs), chunks_per_doc)
    sims = rng.standard_normal(len(rids)).astype(np.float32)
    if chunks_per_doc == 50:  # near-identical chunks: the top 4k chunks hold few documents, so it must widen
        sims = np.repeat(rng.standard_normal(n_docs), chunks_per_doc).astype(np.float32)
    got = _best_per_doc(sims, rids, k)
    want = full_sort(sims, rids, k)
    assert list(got.items()) == list(want.items())


def test_filtered_out_chunks_never_count() -> None:
    sims = np.array([0.9, -np.inf, 0.5, -np.inf], dtype=np.float32)
    rids = np.array([1, 2, 3, 4])
    assert _best_per_doc(sims, rids, 10) == {1: pytest.approx(0.9), 3: pytest.approx(0.5)}
