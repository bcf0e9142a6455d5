"""`sift versions`: list an index's physical versions; `sift versions rollback`: move its alias back.

A thin wrapper: the rollback itself is `indexing.versions.rollback`, which a notebook can call as well.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sift.cli_common import _fail
from sift.exit_codes import FAILED, USAGE

versions_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="List the physical versions of an index (`*`: the one the alias serves), or roll the alias back.",
)

IndexOpt = Annotated[str, typer.Option("--index", help="Index (alias) name.")]
StoreOpt = Annotated[str, typer.Option("--store", help="es or embedded")]


def _store(store: str):  # type: ignore[no-untyped-def]
    from search.stores.factory import make_store

    if store not in ("embedded", "es"):
        raise _fail(f"--store must be 'es' or 'embedded', not {store!r}", USAGE)
    kind: Literal["embedded", "es"] = "es" if store == "es" else "embedded"
    return make_store(kind)


@versions_app.callback()
def versions_cmd(ctx: typer.Context, index: IndexOpt = "docs", store: StoreOpt = "embedded") -> None:
    """List the physical versions of an index and which one the alias serves."""
    if ctx.invoked_subcommand is not None:
        return
    from search.stores.base import StoreError

    s = _store(store)
    try:
        current = s.current_version(index)
        for v in s.list_versions(index):
            mark = "*" if v.version == current else " "
            typer.echo(f"{mark} {v.version}  complete={v.complete}  count={v.count}")
    except StoreError as exc:
        raise _fail(str(exc), FAILED) from exc
    finally:
        s.close()


@versions_app.command("rollback")
def rollback_cmd(
    index: Annotated[str, typer.Option("--index", help="Index (alias) name.")],
    to: Annotated[
        str | None, typer.Option("--to", help="Version to serve (default: the newest complete one before the live).")
    ] = None,
    store: StoreOpt = "embedded",
) -> None:
    """Move the alias back to a complete version (compare-and-swap, under the index's build lock).

    Refused (exit 1, alias unchanged) for an incomplete, gate-refused or missing version, or during a build."""
    from indexing.versions import RollbackRefused, rollback
    from search.stores.base import LockHeld, StoreError

    s = _store(store)
    try:
        report = rollback(s, index, to)
    except ValueError as exc:  # an invalid index name
        raise _fail(str(exc), USAGE) from exc
    except RollbackRefused as exc:
        raise _fail(f"rollback refused, alias unchanged: {exc}", FAILED) from exc
    except LockHeld as exc:
        raise _fail(f"rollback refused while the index is being written: {exc}", FAILED) from exc
    except StoreError as exc:
        raise _fail(f"rollback failed, alias unchanged: {exc}", FAILED) from exc
    finally:
        s.close()
    typer.echo(report.model_dump_json(indent=2))
    if not report.switched:
        typer.secho(f"{report.version} is already live: nothing to do", fg=typer.colors.YELLOW, err=True)
