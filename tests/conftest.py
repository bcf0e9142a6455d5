"""Shared fixtures: tiny models (session), a real Elasticsearch node (session), per-test index names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def tiny_embedder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_embedder

    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


@pytest.fixture(scope="session")
def tiny_reranker_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer cross-encoder (no cross-encoder ships offline), built once per session."""
    from tests.tiny_models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def tiny_chat_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer causal LM with a chat template (summaries)."""
    from tests.tiny_chat_lm import build_tiny_chat_lm

    return build_tiny_chat_lm(tmp_path_factory.mktemp("tiny-chat-lm"))


@pytest.fixture(scope="session")
def tiny_embedder(tiny_embedder_path: Path):  # type: ignore[no-untyped-def]
    from models.embedder import EmbedderConfig, SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(EmbedderConfig(model=str(tiny_embedder_path), device="cpu"))
    emb.warm_up()
    return emb


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """The real node: ELASTICSEARCH_URL if set, else one started here and stopped at the end."""
    url = os.environ.get("ELASTICSEARCH_URL")
    if url:
        yield url
        return
    from sift.es_node import LocalElasticsearch

    port = int(os.environ.get("SIFT_TEST_ES_PORT", "9250"))
    node = LocalElasticsearch(port=port, heap="512m")
    node.wipe()
    node.start()
    try:
        yield node.url
    finally:
        node.stop()


@pytest.fixture
def index_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-CPU machine: a second spinning thread makes each training step many times
    slower. Modules that train opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
