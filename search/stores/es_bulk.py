"""Per-item outcomes of Elasticsearch bulk requests: refusals with their reason, and which are transient.

A 429 (write queue full, circuit breaker) or a disk flood-stage block (`cluster_block_exception`, read-only-
allow-delete) says nothing about the record: the pipeline retries those. A delete of an absent id is not a
failure; any other refused delete is, and is reported as such instead of being counted as deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elasticsearch import Elasticsearch, helpers

from search.stores.base import DeleteFailed, DocFailure

TRANSIENT_TYPES = frozenset({"es_rejected_execution_exception", "circuit_breaking_exception"})


def _transient(status: int | None, etype: str, reason: str) -> bool:
    """429s, and a disk flood-stage block (TOO_MANY_REQUESTS/12, read-only-allow-delete); a write block set by
    an operator (FORBIDDEN/8) is not transient."""
    flood = etype == "cluster_block_exception" and ("flood" in reason or "TOO_MANY_REQUESTS" in reason)
    return status == 429 or etype in TRANSIENT_TYPES or flood


def item_failure(info: dict[str, Any]) -> DocFailure:
    """One refused bulk item as a DocFailure with Elasticsearch's type, reason and status."""
    err = info.get("error", {})
    status = int(info["status"]) if isinstance(info.get("status"), int) else None
    if isinstance(err, dict):
        reason, etype = err.get("reason", str(err)), err.get("type", "error")
        caused = err.get("caused_by", {}).get("reason") if isinstance(err.get("caused_by"), dict) else None
    else:
        reason, etype, caused = str(err), "error", None
    return DocFailure(
        id=str(info.get("_id")),
        reason=f"{etype}: {reason}" + (f" ({caused})" if caused else ""),
        status=status,
        transient=_transient(status, etype, str(reason)),
    )


def bulk_failures(errors: Any) -> list[DocFailure]:
    """`helpers.bulk(..., raise_on_error=False)`'s error items as DocFailures."""
    return [item_failure(next(iter(item.values()))) for item in (errors if isinstance(errors, list) else [])]


def bulk_delete(client: Elasticsearch, target: str, ids: Sequence[str]) -> int:
    """Delete ids; returns how many existed. Refused deletions raise DeleteFailed with those that were applied."""
    actions = [{"_op_type": "delete", "_index": target, "_id": i} for i in ids]
    ok, errors = helpers.bulk(client, actions, raise_on_error=False, raise_on_exception=True)
    failures = []
    for item in errors if isinstance(errors, list) else []:
        info = next(iter(item.values()))
        if info.get("status") == 404 and info.get("result") == "not_found":
            continue  # absent: nothing to delete
        failures.append(item_failure(info))
    if failures:
        raise DeleteFailed(
            f"{len(failures)} of {len(ids)} deletions refused (first: {failures[0].reason})",
            deleted=int(ok),
            failures=failures,
        )
    return int(ok)
