"""One contract for every IndexStore: each implementation supplies a `store` fixture and passes unchanged.

The tests themselves are `search.stores.contract.StoreContract`; this module runs them for both stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from search.stores.base import IndexStore

pytest.register_assert_rewrite(
    "search.stores.contract",
    "search.stores.synonym_contract",
    "search.stores.typo_contract",
    "search.stores.facet_contract",
)  # keep pytest's assertion messages for the suite

from search.stores.contract import StoreContract  # noqa: E402


class TestEmbeddedStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[IndexStore]:
        from search.stores.embedded import EmbeddedStore

        s = EmbeddedStore(tmp_path / "data")
        s.warm_up()
        yield s
        s.close()


@pytest.mark.es
class TestElasticsearchStore(StoreContract):
    @pytest.fixture
    def store(self, es_url: str, index_name: str) -> Iterator[IndexStore]:
        from search.stores.elasticsearch import ElasticsearchStore

        s = ElasticsearchStore(es_url)
        s.warm_up()
        yield s
        s.client.indices.delete(index=f"{index_name}-v*", ignore_unavailable=True, allow_no_indices=True)
        s.close()
