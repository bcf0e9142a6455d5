"""The summary cache: a summary is reused only for the same query, the same results with the same content,
and the same model and settings, so a changed document misses it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence

from search.documents import Document
from search.summarize.schemas import Summary

CacheKey = tuple[str, tuple[tuple[str, str], ...], str]


def cache_key_query(query: str) -> str:
    """The query as the cache keys it: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    q = unicodedata.normalize("NFKC", query).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", q).split())


class SummaryCache:
    """LRU of summaries keyed by (normalized query, ((id, content hash), ...), model id); thread-safe.

    A document that changes gets a new content hash, so its old summaries are never served again (they age out
    of the LRU); no eviction call from indexing is needed.
    """

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[CacheKey, Summary] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(query: str, docs: Sequence[Document], model_id: str) -> CacheKey:
        return cache_key_query(query), tuple((d.id, d.content_hash()) for d in docs), model_id

    def get(self, key: CacheKey) -> Summary | None:
        with self._lock:
            s = self._items.get(key)
            if s is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return s

    def put(self, key: CacheKey, summary: Summary) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = summary
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
