"""Query auto-completion metrics for `bench/lm_train.py`: does the suggester complete what the user went on to type?

Each held-out query is cut at random character positions (Mitra & Craswell's QAC setup): the part before the
cut is what was typed, the whole query is the target. A prefix is *seen* when some query of the training log
starts with it (a trie can answer it), *unseen* otherwise (only a generative model can). Per ranked list:

- MRR@10: 1/rank of the target itself among the first 10 suggestions (0 if absent);
- partial-match MRR@10: 1/rank of the first suggestion that types at least one more whole word of the target
  and nothing the target does not say (it is a word-boundary prefix of the target, longer than the typed one);
- success@5: the target is among the first 5.

SciFact's train and test claims include near-twins (the same claim, reworded or negated): a test query whose word
set overlaps a training query's by Jaccard ≥ 0.5 is left out (`near_twins`), so a gain is not memorisation.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from search.text import normalize_query


@dataclass(frozen=True)
class Prefix:
    key: str  # "<qid>#<cut>"
    typed: str
    target: str
    seen: bool


def _words(text: str) -> set[str]:
    return set(normalize_query(text).split())


def near_twins(test: Mapping[str, str], train: Iterable[str], threshold: float = 0.5) -> dict[str, float]:
    """Test query id → its highest word-set Jaccard with a training query, for those at or over `threshold`."""
    train_sets = [w for w in (_words(t) for t in train) if w]
    out: dict[str, float] = {}
    for qid, text in test.items():
        words = _words(text)
        if not words:
            continue
        best = max((len(words & t) / len(words | t) for t in train_sets), default=0.0)
        if best >= threshold:
            out[qid] = round(best, 3)
    return out


def qac_prefixes(
    queries: Mapping[str, str], log_queries: Iterable[str], per_query: int = 2, seed: int = 0
) -> list[Prefix]:
    """`per_query` distinct random cuts of each query (seeded by query id: stable across runs and systems)."""
    log_sorted = sorted({normalize_query(q) for q in log_queries})
    out: list[Prefix] = []
    for qid in sorted(queries):
        target = normalize_query(queries[qid])
        if len(target) < 2:
            continue
        rng = random.Random(f"{seed}:{qid}")
        cuts = sorted(rng.sample(range(1, len(target)), min(per_query, len(target) - 1)))
        for cut in cuts:
            typed = target[:cut]
            out.append(Prefix(f"{qid}#{cut}", typed, target, is_seen(typed, log_sorted)))
    return out


def is_seen(prefix: str, log_sorted: Sequence[str]) -> bool:
    """Some logged query starts with `prefix` (`log_sorted`: sorted normalised queries)."""
    i = bisect.bisect_left(log_sorted, prefix)
    return i < len(log_sorted) and log_sorted[i].startswith(prefix)


def partial_match(suggestion: str, typed: str, target: str) -> bool:
    """The suggestion extends what was typed, is a prefix of the target and ends where one of its words ends: it
    types at least one more whole word of the target (finishing the one being typed counts) and nothing else."""
    s = normalize_query(suggestion)
    if len(s) <= len(typed) or not s.startswith(typed) or not target.startswith(s):
        return False
    return len(s) == len(target) or target[len(s)] == " "


def scores(ranked: Sequence[str], p: Prefix) -> tuple[float, float, float]:
    """(reciprocal rank of the target, reciprocal rank of the first partial match, success@5), over the top 10."""
    rr = prr = s5 = 0.0
    for rank, text in enumerate(ranked[:10], start=1):
        norm = normalize_query(text)
        if not rr and norm == p.target:
            rr = 1.0 / rank
            s5 = 1.0 if rank <= 5 else 0.0
        if not prr and (norm == p.target or partial_match(norm, p.typed, p.target)):
            prr = 1.0 / rank
    return rr, prr, s5


def qac_table(
    systems: Mapping[str, Mapping[str, Sequence[str]]], prefixes: Sequence[Prefix]
) -> dict[str, dict[str, dict[str, float | int]]]:
    """system → seen / unseen / all → n, MRR@10, partial MRR@10, success@5 (means over prefixes)."""
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for name, ranked in systems.items():
        rows: dict[str, dict[str, float | int]] = {}
        for part in ("seen", "unseen", "all"):
            chosen = [p for p in prefixes if part == "all" or p.seen == (part == "seen")]
            got = [scores(ranked.get(p.key, []), p) for p in chosen]
            n = max(1, len(got))
            rows[part] = {
                "n": len(got),
                "mrr10": round(sum(g[0] for g in got) / n, 4),
                "pmrr10": round(sum(g[1] for g in got) / n, 4),
                "success5": round(sum(g[2] for g in got) / n, 4),
            }
        table[name] = rows
    return table


def qac_markdown(table: Mapping[str, Mapping[str, Mapping[str, float | int]]]) -> str:
    lines = ["| system | prefixes | n | MRR@10 | partial MRR@10 | success@5 |", "|---|---|---|---|---|---|"]
    for name, rows in table.items():
        for part, r in rows.items():
            lines.append(f"| {name} | {part} | {r['n']} | {r['mrr10']} | {r['pmrr10']} | {r['success5']} |")
    return "\n".join(lines)
