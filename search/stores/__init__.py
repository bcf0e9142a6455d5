"""Index stores behind one protocol; import implementations from their modules (they pull heavy clients)."""

from search.stores.base import (
    DocFailure,
    IndexNotFound,
    IndexStore,
    StoreError,
    StoreUnavailable,
    VersionInfo,
    WriteResult,
)

__all__ = [
    "DocFailure",
    "IndexNotFound",
    "IndexStore",
    "StoreError",
    "StoreUnavailable",
    "VersionInfo",
    "WriteResult",
]
