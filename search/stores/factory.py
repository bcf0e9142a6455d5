"""Build a store from its kind and the process settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from search.settings import Settings
from search.stores.base import IndexStore

StoreKind = Literal["embedded", "es"]


def make_store(
    kind: StoreKind,
    settings: Settings | None = None,
    *,
    data_dir: Path | None = None,
    request_timeout: float = 30.0,
    retry_busy: bool = True,
) -> IndexStore:
    settings = settings or Settings()
    if kind == "embedded":
        from search.stores.embedded import EmbeddedStore

        return EmbeddedStore((data_dir or settings.data_dir) / "indices")
    if kind == "es":
        from search.stores.elasticsearch import ElasticsearchStore

        auth = None
        if settings.elasticsearch_username and settings.elasticsearch_password:
            auth = (settings.elasticsearch_username, settings.elasticsearch_password.get_secret_value())
        key = settings.elasticsearch_api_key.get_secret_value() if settings.elasticsearch_api_key else None
        ca = str(settings.elasticsearch_ca_certs) if settings.elasticsearch_ca_certs else None
        return ElasticsearchStore(
            settings.es_url(),
            basic_auth=auth,
            api_key=key,
            request_timeout=request_timeout,
            ca_certs=ca,
            retry_busy=retry_busy,
        )
    raise ValueError(f"unknown store kind {kind!r}: use 'embedded' or 'es'")
