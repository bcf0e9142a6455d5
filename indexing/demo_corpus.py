"""A demo corpus every machine already has: the running interpreter's own documentation.

Built from `pydoc_data.topics` (the language reference topics behind `help()`) and the docstrings of the
standard library's source files. Sources are parsed with `ast`, never imported: importing arbitrary stdlib
modules has side effects (`antigravity` opens a browser, `this` prints) and is slow.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from search.documents import Document

MIN_DOCSTRING_CHARS = 80  # shorter class/function docstrings are mostly "Return x." noise
_MAX_SIGNATURE_CHARS = 120
_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip"}
)
# Whole packages left out: generated near-duplicates (codec tables) or data rather than documentation.
_SKIP_PACKAGES = frozenset({"encodings", "pydoc_data"})
_DOCS_URL = "https://docs.python.org/3"

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def build_demo_corpus(out: Path, limit: int | None = None) -> int:
    """Write the demo corpus as JSONL Documents to `out` (atomically); returns the number written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc in iter_demo_documents(limit):
            record = doc.model_dump(mode="json", include={"id", "title", "body", "url", "fields"}, exclude_none=True)
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, out)
    return count


def iter_demo_documents(limit: int | None = None) -> Iterator[Document]:
    """Demo Documents in a deterministic order: reference topics, then stdlib modules by dotted name."""
    if limit is not None and limit <= 0:
        return
    seen: set[str] = set()
    for doc in _all_documents():
        if doc.id in seen:  # e.g. a function defined twice at module level: keep the first
            continue
        seen.add(doc.id)
        yield doc
        if limit is not None and len(seen) >= limit:
            return


def _all_documents() -> Iterator[Document]:
    yield from _topic_documents()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path, dotted in _stdlib_sources(stdlib):
        yield from _module_documents(path, dotted)


# --- reference topics -------------------------------------------------------------------------------------


def _topic_documents() -> Iterator[Document]:
    """pydoc's topics are a plain data module, so importing it is safe; some distributions strip it."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for name in sorted(topics):
        body = topics[name].strip()
        if body:
            yield Document(
                id=f"topic:{name}",
                title=name,
                body=body,
                url=f"{_DOCS_URL}/search.html?q={name}",
                fields={"kind": "topic"},
            )


# --- stdlib sources ---------------------------------------------------------------------------------------


def _stdlib_sources(stdlib: Path) -> list[tuple[Path, str]]:
    """(file, dotted module name) for the public stdlib sources, sorted by dotted name."""
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        here = Path(dirpath)
        rel = here.relative_to(stdlib).parts
        # Descend only into public packages (subdirectories with an __init__.py).
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(("_", "."))
            and d not in _SKIP_DIRS
            and not (not rel and d in _SKIP_PACKAGES)
            and (here / d / "__init__.py").is_file()
        )
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            if name == "__init__.py":
                if not rel:
                    continue
                dotted = ".".join(rel)
            elif name.startswith("_") or (not rel and name[:-3] in _SKIP_PACKAGES):
                continue
            else:
                dotted = ".".join((*rel, name[:-3]))
            found.append((here / name, dotted))
    return sorted(found, key=lambda item: item[1])


def _module_documents(path: Path, dotted: str) -> Iterator[Document]:
    """Docs for one source file; a file that cannot be read or parsed contributes nothing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escapes in old sources
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
        return
    top = dotted.split(".")[0]
    url = f"{_DOCS_URL}/library/{top}.html"
    doc = ast.get_docstring(tree, clean=True)
    if doc and doc.strip():
        yield Document(
            id=f"module:{dotted}",
            title=dotted,
            body=doc.strip(),
            url=url,
            fields={"kind": "module", "module": top},
        )
    yield from _definition_documents(tree.body, dotted, top, url, in_class=False)


def _definition_documents(
    body: list[ast.stmt], prefix: str, top: str, url: str, *, in_class: bool
) -> Iterator[Document]:
    """Public classes, functions and methods (recursing into classes) with a substantial docstring."""
    for node in body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name.startswith("_"):
            continue
        name = f"{prefix}.{node.name}"
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc.strip()) >= MIN_DOCSTRING_CHARS:
            if isinstance(node, ast.ClassDef):
                kind, title = "class", f"class {name}{_class_signature(node)}"
            else:
                kind, title = "function", f"{name}{_signature(node, method=in_class)}"
            yield Document(
                id=f"module:{name}",
                title=title,
                body=doc.strip(),
                url=f"{url}#{name}",
                fields={"kind": kind, "module": top},
            )
        if isinstance(node, ast.ClassDef):
            yield from _definition_documents(node.body, name, top, url, in_class=True)


def _signature(node: _FunctionNode, *, method: bool) -> str:
    """Argument list such as `(a, b=1)` from the parsed arguments, shortened when long; drops self/cls."""
    args = node.args
    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
    if method and not is_static:
        args = copy.copy(args)
        if args.posonlyargs:
            args.posonlyargs = args.posonlyargs[1:]
        elif args.args:
            args.args = args.args[1:]
    try:
        text = ast.unparse(args)
    except (ValueError, RecursionError):
        return "(...)"
    if len(text) > _MAX_SIGNATURE_CHARS:  # keep the leading parameters, cut at a parameter boundary
        cut = text.rfind(", ", 0, _MAX_SIGNATURE_CHARS)
        text = f"{text[:cut]}, ..." if cut > 0 else "..."
    return f"({text})"


def _class_signature(node: ast.ClassDef) -> str:
    """The constructor's arguments, if the class defines __init__ itself; else nothing."""
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == "__init__":
            return _signature(stmt, method=True)
    return ""
