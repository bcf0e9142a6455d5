"""The exit codes in `docs/cli-exit-codes.md` are the ones the CLI's code can return.

The code side is read from the source: every `typer.Exit(code)` and `_fail(message, code)` (its default when
no code is given) in each command's function and in the `sift` functions it calls, followed through the
command's module and its imports, with named codes resolved (`sift/exit_codes.py`). Every command also exits
0 (success), 1 (an uncaught exception, Ctrl-C) and 2 (click's own usage errors). The doc must list, for every
command of the typer app and no other, exactly those codes, and its table of codes must be `EXIT_CODES`."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sift.exit_codes import EXIT_CODES, FAILED, GATE_REFUSED, OK, USAGE
from tests.conftest import REPO

DOC = REPO / "docs" / "cli-exit-codes.md"
ALWAYS = {OK, FAILED, USAGE}


def commands() -> Iterator[tuple[str, Callable[..., Any]]]:
    """(`sift ...` path, callback) of every command and group callback of the typer app."""
    from sift.cli import app

    def walk(typer_app: Any, path: str) -> Iterator[tuple[str, Callable[..., Any]]]:
        if typer_app.registered_callback is not None and path != "sift":
            yield path, typer_app.registered_callback.callback
        for c in typer_app.registered_commands:
            yield f"{path} {c.name or c.callback.__name__.replace('_', '-')}", c.callback
        for g in typer_app.registered_groups:
            yield from walk(g.typer_instance, f"{path} {g.name}")

    yield from walk(app, "sift")


def _resolve(node: ast.expr, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return scope.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _fail_default(fn: Callable[..., Any]) -> int:
    default = inspect.signature(fn).parameters["code"].default
    assert isinstance(default, int), f"{fn.__module__}._fail has no default code"
    return default


def exit_codes(fn: Callable[..., Any], seen: set[Any] | None = None) -> set[int]:
    """The exit codes `fn` raises itself or through the sift functions it calls."""
    seen = set() if seen is None else seen
    if fn in seen or not getattr(fn, "__module__", "").startswith("sift."):
        return set()
    seen.add(fn)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    scope = dict(vars(importlib.import_module(fn.__module__)))
    for node in ast.walk(tree):  # imports inside the function (the CLI imports lazily)
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = importlib.import_module(node.module)
            scope.update({a.asname or a.name: getattr(mod, a.name, None) for a in node.names})
    codes: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, scope)
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name == "Exit" and node.args:
            code = _resolve(node.args[0], scope)
            assert isinstance(code, int), f"{fn.__qualname__}: typer.Exit({ast.unparse(node.args[0])}) unresolved"
            codes.add(code)
        elif name == "_fail" and callable(target):
            given = (
                node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "code"), None)
            )
            code = _resolve(given, scope) if given is not None else _fail_default(target)
            assert isinstance(code, int), f"{fn.__qualname__}: _fail(..., {ast.unparse(given)}) unresolved"  # type: ignore[arg-type]
            codes.add(code)
        elif inspect.isfunction(target):
            codes |= exit_codes(target, seen)
    return codes


def documented() -> tuple[dict[int, str], dict[str, set[int]]]:
    """The doc's table of codes (code → constant name) and its table of commands (path → codes)."""
    codes, per_command = {}, {}
    for line in DOC.read_text().splitlines():
        if m := re.match(r"^\|\s*(\d+)\s*\|\s*`(\w+)`\s*\|", line):
            codes[int(m.group(1))] = m.group(2)
        elif m := re.match(r"^\|\s*`(sift[^`]*)`\s*\|\s*([\d, ]+)\s*\|", line):
            per_command[m.group(1)] = {int(c) for c in m.group(2).split(",")}
    return codes, per_command


def test_the_table_of_codes_is_exit_codes() -> None:
    import sift.exit_codes as module

    names = {v: k for k, v in vars(module).items() if k.isupper() and isinstance(v, int)}
    codes, _ = documented()
    assert codes == {code: names[code] for code in EXIT_CODES}


def test_the_reader_finds_what_commands_raise() -> None:
    """The static reading is not vacuous: codes known from the CLI's behaviour are found."""
    found = {path: exit_codes(fn) for path, fn in commands()}
    assert GATE_REFUSED in found["sift index"] and GATE_REFUSED in found["sift reindex"]  # through the gate
    assert {FAILED, USAGE} <= found["sift versions rollback"]
    assert found["sift es status"] == {FAILED}
    assert USAGE in found["sift search"]  # through _store_kind, a helper in the same module


@pytest.mark.parametrize("path", [p for p, _ in commands()])
def test_each_command_documents_exactly_its_codes(path: str) -> None:
    fn = dict(commands())[path]
    _, per_command = documented()
    assert path in per_command, f"{path} is missing from {DOC.name}"
    raised = exit_codes(fn)
    assert raised <= set(EXIT_CODES), f"{path} exits with undeclared code(s) {raised - set(EXIT_CODES)}"
    assert per_command[path] == ALWAYS | raised, f"{path}: documented {per_command[path]}, code {ALWAYS | raised}"


def test_no_stale_commands_in_the_doc() -> None:
    _, per_command = documented()
    assert set(per_command) == {p for p, _ in commands()}
