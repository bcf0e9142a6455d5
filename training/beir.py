"""BEIR-layout test collections: queries.jsonl, qrels/<split>.tsv (graded judgments) and a corpus beside them.

Read in one place for every evaluation (`sift eval`, `sift eval-suggest`, the bench report), so that what counts
as a relevant document (grade > 0) and which queries are judged is the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field


class BeirData(BaseModel):
    """Queries and graded judgments of one split; only queries with at least one relevant document."""

    name: str
    root: Path
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = Field(description="query id → doc id → grade (> 0 only).")
    queries_without_qrels: int = Field(default=0, description="Queries in queries.jsonl left out: nothing relevant.")
    judged_missing_query: int = Field(default=0, description="Judged query ids absent from queries.jsonl.")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (`query-id corpus-id score`, header optional), all grades kept as written."""
    out: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.rstrip("\r\n").split("\t")
            if not line.strip():
                continue
            if n == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
            qid, did, score = parts[0].strip(), parts[1].strip(), parts[2].strip()
            out.setdefault(qid, {})[did] = int(float(score))
    return out


def read_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl: query id → text (a record without text reads as the empty string)."""
    queries: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                queries[str(rec["_id"])] = str(rec.get("text", ""))
    return queries


def relevant_only(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """BEIR convention: a grade > 0 is relevant; 0 and negative grades are dropped (as is a query left empty)."""
    out = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
    return {q: docs for q, docs in out.items() if docs}


def queries_file(root: Path, split: str) -> Path:
    """queries_<split>.jsonl where a collection keeps a split's queries apart (SciFact's train), else queries.jsonl."""
    own = root / f"queries_{split}.jsonl"
    return own if own.is_file() else root / "queries.jsonl"


def load_beir(root: Path, split: str = "test", qrels_file: Path | None = None) -> BeirData:
    """A BEIR folder: corpus.jsonl (indexed elsewhere), queries.jsonl and qrels/<split>.tsv.

    `qrels_file` replaces the split's qrels (e.g. click-derived judgments); queries it names that the folder
    lacks are read from the queries.jsonl of its own BEIR folder (<qrels_file>/../../queries.jsonl)."""
    qrels_path = qrels_file or root / "qrels" / f"{split}.tsv"
    queries_path = queries_file(root, split)
    for p in (root / "corpus.jsonl", queries_path, qrels_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: {root} is not a BEIR folder for split {split!r}")
    queries = read_queries(queries_path)
    own = qrels_path.parent.parent / "queries.jsonl"
    if qrels_file is not None and own.is_file() and own.resolve() != queries_path.resolve():
        queries = {**queries, **read_queries(own)}
    qrels = relevant_only(read_qrels(qrels_path))
    missing = [q for q in qrels if q not in queries]
    qrels = {q: d for q, d in qrels.items() if q in queries and queries[q].strip()}
    return BeirData(
        name=root.resolve().name,
        root=root,
        split=split,
        queries={q: queries[q] for q in qrels},
        qrels=qrels,
        queries_without_qrels=len([q for q in queries if q not in qrels]),
        judged_missing_query=len(missing),
    )
