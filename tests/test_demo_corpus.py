"""The demo corpus: the interpreter's own docs, built without downloads and without importing the stdlib."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from indexing.demo_corpus import build_demo_corpus
from indexing.readers import read_source
from search.documents import Document

REPO = Path(__file__).resolve().parents[1]


def test_demo_corpus_builds_many_valid_unique_documents(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "corpus.jsonl"
    n = build_demo_corpus(out)
    assert n > 1000
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == n
    docs = [Document.model_validate(json.loads(line)) for line in lines]
    ids = [d.id for d in docs]
    assert len(set(ids)) == n
    kinds = {d.fields["kind"] for d in docs}
    assert {"module", "class", "function"} <= kinds
    assert all(d.body.strip() and d.title for d in docs)
    by_id = {d.id: d for d in docs}
    if "module:json.dumps" in by_id:
        dumps = by_id["module:json.dumps"]
        assert dumps.title.startswith("json.dumps(obj")
        assert dumps.fields == {"kind": "function", "module": "json"}
        assert dumps.url is not None and dumps.url.startswith("https://docs.python.org/3/library/json.html")
    assert not any(i.startswith(("module:test.", "module:idlelib", "module:lib2to3")) for i in ids)
    # The file reads back through the JSONL reader without errors.
    items = list(read_source(out))
    assert len(items) == n and all(i.error is None for i in items)


def test_demo_corpus_is_deterministic_and_limited(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert build_demo_corpus(a, limit=50) == 50
    assert build_demo_corpus(b, limit=50) == 50
    assert a.read_bytes() == b.read_bytes()


def test_demo_corpus_imports_no_stdlib_modules(tmp_path: Path) -> None:
    """Run in a fresh interpreter: importing e.g. `antigravity` would open a browser."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from indexing.demo_corpus import build_demo_corpus
        before = set(sys.modules)
        build_demo_corpus(Path({str(tmp_path / "c.jsonl")!r}))
        print(" ".join(sorted(set(sys.modules) - before)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    new_modules = set(result.stdout.split())
    assert new_modules <= {"pydoc_data", "pydoc_data.topics"}
    assert "antigravity" not in new_modules and "this" not in new_modules
