"""Elasticsearch build locks: one lease document per index in a small lock index, written create-only.

`op_type=create` makes taking a free lock atomic across processes and hosts; a stale lease (expired, or its pid
dead on this host) is taken over with a compare-and-set write (`if_seq_no`/`if_primary_term`), so of two
builds that both saw it stale exactly one wins. Renewal and release use the same compare-and-set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError, TransportError
from elasticsearch import ConnectionError as EsConnectionError

from search.stores.base import AliasConflict, LeaseInfo, LockLost, StoreUnavailable
from search.stores.leases import held_error, is_stale, new_lease, renewed

LOCK_INDEX = "sift-locks"
_MAPPINGS: dict[str, Any] = {"dynamic": False, "properties": {"index": {"type": "keyword"}}}
T = TypeVar("T")


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (EsConnectionError, TransportError) as exc:
        raise StoreUnavailable(f"Elasticsearch unreachable: {exc}") from exc


class EsBuildLock:
    """A held lease document; `_seq` is the (seq_no, primary_term) of our last write, for compare-and-set."""

    def __init__(self, client: Elasticsearch, lease: LeaseInfo, lease_s: float, seq: tuple[int, int]) -> None:
        self._client = client
        self._lease = lease
        self._lease_s = lease_s
        self._seq = seq
        self._released = False

    @property
    def lease(self) -> LeaseInfo:
        return self._lease

    def renew(self) -> None:
        lease = renewed(self._lease, self._lease_s)
        try:
            resp = _call(
                lambda: self._client.index(
                    index=LOCK_INDEX,
                    id=lease.index,
                    document=lease.model_dump(mode="json"),
                    if_seq_no=self._seq[0],
                    if_primary_term=self._seq[1],
                )
            )
        except (ConflictError, NotFoundError) as exc:
            holder = _read(self._client, lease.index)
            who = holder[0].describe() if holder else "nobody"
            raise LockLost(f"build lock of {lease.index!r} was taken over by {who}") from exc
        self._seq = (int(resp["_seq_no"]), int(resp["_primary_term"]))
        self._lease = lease

    def release(self) -> None:
        if self._released:
            return
        try:
            _call(
                lambda: self._client.delete(
                    index=LOCK_INDEX,
                    id=self._lease.index,
                    if_seq_no=self._seq[0],
                    if_primary_term=self._seq[1],
                )
            )
        except (ConflictError, NotFoundError):
            pass  # taken over (or removed) meanwhile: not ours to delete
        self._released = True


def acquire_es_lock(client: Elasticsearch, index: str, owner: str, lease_s: float) -> EsBuildLock:
    """Create the lease document, or take over a stale one; raise LockHeld naming a live holder."""
    _ensure_index(client)
    lease = new_lease(index, owner, lease_s)
    doc = lease.model_dump(mode="json")
    try:
        resp = _call(lambda: client.create(index=LOCK_INDEX, id=index, document=doc))
        return EsBuildLock(client, lease, lease_s, (int(resp["_seq_no"]), int(resp["_primary_term"])))
    except ConflictError:
        pass
    held = _read(client, index)
    if held is None:  # released between our create and read: try once more, create-only again
        return acquire_es_lock(client, index, owner, lease_s)
    current, seq = held
    if not is_stale(current):
        raise held_error(current)
    try:
        resp = _call(
            lambda: client.index(index=LOCK_INDEX, id=index, document=doc, if_seq_no=seq[0], if_primary_term=seq[1])
        )
    except ConflictError:
        again = _read(client, index)
        raise held_error(again[0] if again else current) from None
    return EsBuildLock(client, lease, lease_s, (int(resp["_seq_no"]), int(resp["_primary_term"])))


def _ensure_index(client: Elasticsearch) -> None:
    try:
        _call(
            lambda: client.options(ignore_status=400).indices.create(
                index=LOCK_INDEX, settings={"number_of_shards": 1, "auto_expand_replicas": "0-1"}, mappings=_MAPPINGS
            )
        )
    except ApiError as exc:
        raise StoreUnavailable(f"cannot create the lock index {LOCK_INDEX!r}: {exc}") from exc


def _read(client: Elasticsearch, index: str) -> tuple[LeaseInfo, tuple[int, int]] | None:
    try:
        resp = _call(lambda: client.get(index=LOCK_INDEX, id=index))
    except NotFoundError:
        return None
    return LeaseInfo.model_validate(resp["_source"]), (int(resp["_seq_no"]), int(resp["_primary_term"]))


def es_swap_alias(
    client: Elasticsearch, name: str, version: str, expected: str | None, current: Callable[[], str | None]
) -> None:
    """Move `name` from `expected` to `version` in one `_aliases` call whose remove must find the alias on
    `expected` (`must_exist`): if another build moved it meanwhile, the whole call fails and nothing changes.
    With `expected=None` (a first build) a read check before and after stands in, since ES has no
    "add only if absent"."""
    now = current()
    if now != expected:
        raise AliasConflict(f"alias {name!r} points at {now!r}, not at {expected!r} where this build started")
    if expected == version:
        return
    actions: list[dict[str, Any]] = [{"add": {"index": version, "alias": name}}]
    if expected is not None:
        actions.insert(0, {"remove": {"index": expected, "alias": name, "must_exist": True}})
    try:
        _call(lambda: client.indices.update_aliases(actions=actions))
    except NotFoundError as exc:
        raise AliasConflict(f"alias {name!r} is no longer on {expected!r}: {exc.message}") from exc
    if expected is None:
        resp = _call(lambda: client.indices.get_alias(name=name))
        if set(resp.body) != {version}:
            _call(lambda: client.indices.update_aliases(actions=[{"remove": {"index": version, "alias": name}}]))
            raise AliasConflict(f"alias {name!r} was created by another build meanwhile ({sorted(resp.body)})")
