"""What `sift models promote` scores a candidate and the live version with, per model kind.

Each evaluator takes a version folder, or None for the baseline (no model of that kind live), and returns mean
nDCG@10 on one evaluation built once, so both figures of a promotion are measured on the same queries:

- encoder: cosine re-ordering of the evaluation set's candidates; baseline: the configured embedder;
- reranker: the cross-encoder's order of them, loaded as the app serves it; baseline: the served order;
- ranker: LambdaMART on the features logged with the impressions of the click log's held-out share of queries
  (`training/neural_data.is_held_out`), graded as `training/ltr.py` grades; baseline: the fused (served) order.
  `sift train ranker` cross-fits on every train query, so these queries are in both rankers' training data: the
  comparison is in-sample and guards against a version worse than the live one on today's logs, while the
  candidate's own out-of-fold gate at training time is what says it generalises.
- lm: partial-match MRR@10 of completions of held-out successful queries' prefixes (the candidate's time or
  session split); baseline: the suggester's configured (stock) LM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logs.querylog import QueryEvent
from models.causal_lm import DEFAULT_LM
from models.cross_encoder import CrossEncoderConfig
from models.registry import REF_PREFIX
from ranking.features import FEATURES
from ranking.ltr import MODEL_FILE, base_scores, load_meta
from search.suggest.lm_completer import LMCompleter, LMCompleterConfig
from training.click_data import Session
from training.ltr import FUSED_RANK, RankerTrainConfig, mean_ndcg, ranker_data
from training.neural_data import EvalSet, evaluate_encoder, evaluate_reranker, is_held_out

Evaluate = Callable[[Path | None], float]


def encoder_evaluator(evalset: EvalSet, default_model: str) -> Evaluate:
    return lambda path: evaluate_encoder(evalset, path, default_model)


def reranker_evaluator(evalset: EvalSet, serve: CrossEncoderConfig | None = None) -> Evaluate:
    """Each version scored as the app would serve it (`serve`: its reranker settings)."""
    return lambda path: evaluate_reranker(evalset, path, serve)


def ranker_evaluator(
    impressions: Sequence[QueryEvent],
    sessions: Sequence[Session],
    cfg: RankerTrainConfig,
    holdout: float = 0.2,
    seed: int = 0,
) -> tuple[Evaluate, dict[str, Any]]:
    """Rows of the held-out queries (`holdout`, `seed`) labelled by the click model `cfg` names; the evaluator
    and a description of what it scores."""
    import lightgbm as lgb

    data, _ = ranker_data(impressions, sessions, cfg)
    held = np.flatnonzero([is_held_out(q, holdout, seed) for q in data.queries])
    if len(held) == 0:
        raise ValueError("no held-out query has logged features: nothing to evaluate rankers on")
    x = data.x[held]

    def evaluate(path: Path | None) -> float:
        if path is None:
            return mean_ndcg(data, held, np.nan_to_num(-x[:, FUSED_RANK], nan=-1e9))
        meta = load_meta(path)
        if tuple(meta.features) != FEATURES:
            raise ValueError(f"ranker {path} was trained on features {meta.features}, not {list(FEATURES)}")
        booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        return mean_ndcg(data, held, np.asarray(booster.predict(x)) + base_scores(x, meta.base_weight))

    source = (
        f"clicks: logged features of held-out queries ({cfg.click_model} grades; in-sample for cross-fitted rankers)"
    )
    return evaluate, {"source": source, "queries": len({data.queries[r] for r in held}), "rows": len(held)}


def lm_evaluator(
    heldout: Sequence[str], logged: Sequence[str], serve: LMCompleterConfig, n_prefixes: int = 300, seed: int = 0
) -> tuple[Evaluate, dict[str, Any]]:
    """Partial-match MRR@10 (training/qac_eval.py) of the LM's own completions of random prefixes of held-out
    successful queries, each version served with its saved prompt; baseline: the suggester's configured LM."""
    from training.qac_eval import qac_prefixes, scores

    queries = {f"h{i}": q for i, q in enumerate(heldout)}
    prefixes = qac_prefixes(queries, logged, per_query=1, seed=seed)
    prefixes = sorted(prefixes, key=lambda p: p.key)[:n_prefixes]
    if not prefixes:
        raise ValueError("no held-out successful query in the logs: nothing to evaluate LM versions on")

    def with_model(model: str) -> LMCompleterConfig:
        return serve.model_copy(update={"lm": serve.lm.model_copy(update={"model": model})})

    # none live: the stock model (a suggester that follows the registry would serve nothing at all)
    stock = with_model(DEFAULT_LM) if serve.lm.model.startswith(REF_PREFIX) else serve

    def evaluate(path: Path | None) -> float:
        lm = LMCompleter(stock if path is None else with_model(str(path)))
        typed = sorted({p.typed for p in prefixes})
        got: dict[str, list[str]] = {}
        for i in range(0, len(typed), 16):
            part = typed[i : i + 16]
            for t, cands in zip(part, lm.complete(part), strict=True):
                got[t] = [c.text for c in sorted(cands, key=lambda c: -c.score)]
        return sum(scores(got[p.typed], p)[1] for p in prefixes) / len(prefixes)

    described = {"source": "clicks: prefixes of the log's held-out successful queries", "prefixes": len(prefixes),
                 "unseen": sum(not p.seen for p in prefixes)}  # fmt: skip
    return evaluate, described
