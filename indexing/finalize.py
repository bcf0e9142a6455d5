"""The one finish path of a full build, shared by the single-process pipeline and the Ray Data engine.

`finalize_build`: refresh, count check, quality gate (when configured), mark complete, then a compare-and-swap
of the alias from the version that was live when the build started. It raises instead of moving the alias on
any doubt; what to do with the new version then is the caller's: drop it, except after `GateRefused`, where it
is kept (incomplete, so never served, and removed by the next build) for inspection.
`build_lock` (from `indexing.locks`) is held around the whole build.
"""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel

from indexing.errors import IndexingError
from indexing.gate import Evaluator, GateConfig, GateRefused, GateResult, JudgmentEvaluator, run_gate
from indexing.locks import DEFAULT_LEASE_S, HeldLock, build_lock
from search.stores.base import AliasConflict, IndexStore

__all__ = [
    "DEFAULT_LEASE_S",
    "FinalizeReport",
    "GateRefused",
    "HeldLock",
    "IndexingError",
    "build_lock",
    "finalize_build",
]

log = logging.getLogger("sift.indexing")


class FinalizeReport(BaseModel):
    """What the finish did: the count it checked, the gate's figures, where the alias was and is."""

    index: str
    version: str
    previous: str | None
    stored: int
    alias_switched: bool
    gate: GateResult | None = None
    seconds: float


def finalize_build(
    store: IndexStore,
    index: str,
    version: str,
    *,
    expected_live: str | None,
    indexed: int,
    gate: GateConfig | None = None,
    evaluator: Evaluator | None = None,
) -> FinalizeReport:
    """Move `index` to `version` only if every written document is there, the gate (if any) passes and the
    alias is still on `expected_live`. Raises IndexingError (count, alias moved meanwhile) or GateRefused.
    Without an `evaluator`, the gate runs BM25-only judgments (dense and hybrid need the build's encoder:
    pass `JudgmentEvaluator(store, gate, encoder)`)."""
    started = time.perf_counter()
    store.refresh(version)
    stored = store.count(version)
    if stored != indexed:
        raise IndexingError(f"count check failed: {stored} documents in {version}, {indexed} reported indexed")
    result = None
    if gate is not None:
        if evaluator is None:
            evaluator = JudgmentEvaluator(store, gate, None)
        n = len(evaluator.queries) if isinstance(evaluator, JudgmentEvaluator) else 0
        result = run_gate(gate, evaluator, version, expected_live, n)
        log.info("quality gate: nDCG@10 new %.4f, live %s (%s)", result.new, result.live, result.mode)
        if not result.passed:
            raise GateRefused(result)
    store.mark_complete(version)
    try:
        store.swap_alias(index, version, expected_live)
    except AliasConflict as exc:
        raise IndexingError(f"the alias moved during the build, not swapping: {exc}") from exc
    log.info("alias %s -> %s (%d documents; was %s)", index, version, stored, expected_live)
    return FinalizeReport(
        index=index,
        version=version,
        previous=expected_live,
        stored=stored,
        alias_switched=True,
        gate=result,
        seconds=round(time.perf_counter() - started, 3),
    )
