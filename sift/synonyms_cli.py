"""`sift synonyms list|set|delete --index NAME`: an index's synonym sets, from the shell.

A thin wrapper over `search.stores.synonym_stores.synonym_store(store)` (`get`, `put`, `delete`), which a notebook
can call as well; the HTTP API (`/v1/indexes/{index}/synonyms`) and the indexing config's `synonyms:` write the
same store. A running server reads a change at its next search (Elasticsearch: within 2 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from sift.cli_common import _fail
from sift.exit_codes import FAILED, USAGE

synonyms_app = typer.Typer(no_args_is_help=True, help="Show, replace or remove an index's synonym sets.")

IndexOpt = Annotated[str, typer.Option("--index", help="Index (alias) name.")]
StoreOpt = Annotated[str, typer.Option("--store", help="es or embedded")]


def _synonyms(store: str) -> Any:
    from search.stores.factory import make_store
    from search.stores.synonym_stores import synonym_store

    if store not in ("embedded", "es"):
        raise _fail(f"--store must be 'es' or 'embedded', not {store!r}", USAGE)
    kind: Literal["embedded", "es"] = "es" if store == "es" else "embedded"
    s = make_store(kind)
    s.warm_up()
    syn = synonym_store(s)
    assert syn is not None  # both store kinds keep synonyms
    return syn


def load_sets(path: Path) -> Any:
    """Sets from a YAML or JSON file: a list of sets, or `{sets: [...]}`; a `ValueError` says what is wrong."""
    import yaml
    from pydantic import ValidationError

    from search.synonyms import SynonymSets

    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    try:
        return SynonymSets.model_validate(data if data is not None else [])
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from exc


@synonyms_app.command("list")
def list_cmd(index: IndexOpt, store: StoreOpt = "embedded") -> None:
    """Print the index's sets as JSON (with their version and when they last changed)."""
    from search.stores.base import StoreError

    try:
        typer.echo(_synonyms(store).get(index).model_dump_json(indent=2, exclude_none=True))
    except ValueError as exc:
        raise _fail(str(exc), USAGE) from exc
    except StoreError as exc:
        raise _fail(str(exc), FAILED) from exc


@synonyms_app.command("set")
def set_cmd(
    index: IndexOpt,
    file: Annotated[Path, typer.Option("--file", help="YAML or JSON: a list of sets, or {sets: [...]}.")],
    store: StoreOpt = "embedded",
) -> None:
    """Replace all of the index's sets with those in --file."""
    from search.stores.base import StoreError

    try:
        sets = load_sets(file)
        stored = _synonyms(store).put(index, sets)
    except ValueError as exc:
        raise _fail(str(exc), USAGE) from exc
    except StoreError as exc:
        raise _fail(str(exc), FAILED) from exc
    typer.echo(json.dumps({"index": stored.index, "version": stored.version, "sets": len(stored.sets)}))


@synonyms_app.command("delete")
def delete_cmd(index: IndexOpt, store: StoreOpt = "embedded") -> None:
    """Remove the index's sets."""
    from search.stores.base import StoreError

    try:
        deleted = _synonyms(store).delete(index)
    except ValueError as exc:
        raise _fail(str(exc), USAGE) from exc
    except StoreError as exc:
        raise _fail(str(exc), FAILED) from exc
    typer.echo(json.dumps({"index": index, "deleted": deleted}))
