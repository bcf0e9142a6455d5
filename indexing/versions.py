"""Rolling an index's alias back to an earlier complete version: `rollback(store, index, to=None)`.

The only other caller of `swap_alias` is a build's finish. An operator who finds the live version bad needs the
way back without a rebuild: the alias moves, by the same compare-and-swap, to a version that a build finished
(marked complete after its count check and quality gate). A version left incomplete, by a crashed build or a
gate refusal (a refused version is kept, never marked complete, for inspection), is refused, as is one that was
pruned or dropped. The move runs under the index's build lock, so it never interleaves with a build or an
incremental run of the same index (either would otherwise swap or write past it); a held lock is `LockHeld`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from indexing.errors import IndexingError
from indexing.locks import build_lock
from search.naming import validate_index_name, version_alias
from search.stores.base import AliasConflict, IndexStore, VersionInfo

log = logging.getLogger("sift.indexing")

ROLLBACK_LEASE_S = 30.0  # a rollback holds the lock for a few store calls; a dead one frees it this soon


class RollbackRefused(IndexingError):
    """The alias stays where it was: the target cannot be served, or the alias moved meanwhile."""


class RollbackReport(BaseModel):
    """Where the alias was and is."""

    model_config = ConfigDict(extra="forbid")

    index: str = Field(description="The alias that moved.")
    previous: str | None = Field(description="The version it served before.")
    version: str = Field(description="The version it serves now.")
    switched: bool = Field(description="False when the target was already live (nothing to do).")


def _names(versions: Sequence[VersionInfo]) -> str:
    return ", ".join(f"{v.version}{'' if v.complete else ' (incomplete)'}" for v in versions) or "none"


def choose_target(index: str, versions: Sequence[VersionInfo], live: str | None, to: str | None) -> str:
    """The version to move `index` to: `to` if it exists and is complete, else (to=None) the newest complete
    version older than `live`. Raises RollbackRefused saying why none qualifies. `versions` oldest first."""
    if to is not None:
        if version_alias(to) != index:
            raise RollbackRefused(f"{to!r} is not a version of {index!r} (versions are named {index}-v<timestamp>)")
        found = next((v for v in versions if v.version == to), None)
        if found is None:
            raise RollbackRefused(f"version {to} no longer exists (versions of {index}: {_names(versions)})")
        if not found.complete:
            raise RollbackRefused(
                f"version {to} is incomplete: its build did not finish or its quality gate refused it, "
                "and an incomplete version is never served"
            )
        return to
    if live is None:
        raise RollbackRefused(f"{index!r} has no live version to roll back from (versions: {_names(versions)})")
    names = [v.version for v in versions]
    older = versions[: names.index(live)] if live in names else [v for v in versions if v.version < live]
    complete = [v.version for v in older if v.complete]
    if not complete:
        raise RollbackRefused(
            f"no complete version of {index!r} is older than the live {live} (versions: {_names(versions)})"
        )
    return complete[-1]


def rollback(
    store: IndexStore, index: str, to: str | None = None, *, lease_s: float = ROLLBACK_LEASE_S
) -> RollbackReport:
    """Move alias `index` back to version `to` (default: the newest complete version older than the live one).

    A compare-and-swap from the live version read under the index's build lock. Raises ValueError for an
    invalid index name, LockHeld while a build or incremental run holds the index, RollbackRefused when the
    target is missing or incomplete (crashed or gate-refused), and StoreError when the store fails."""
    validate_index_name(index)
    store.warm_up()
    owner = f"sift-rollback@{socket.gethostname()}:{os.getpid()}"
    with build_lock(store, index, lease_s, owner=owner) as held:
        live = store.current_version(index)
        target = choose_target(index, store.list_versions(index), live, to)
        if target == live:
            return RollbackReport(index=index, previous=live, version=target, switched=False)
        held.check()
        try:
            store.swap_alias(index, target, live)
        except AliasConflict as exc:  # only a writer that ignores the lock could move it: say so, move nothing
            raise RollbackRefused(f"the alias moved meanwhile, not swapping: {exc}") from exc
    log.info("alias %s rolled back %s -> %s", index, live, target)
    return RollbackReport(index=index, previous=live, version=target, switched=True)
