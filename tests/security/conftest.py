"""Fixtures of the security suites: the real MiniLM embedder, shared per session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from stagecache.embeddings import SentenceTransformerEmbedder
from stagecache.types import Vectors


class SharedEmbedder:
    """The real embedder without warm_up/aclose, so a pipeline cannot unload it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        vectors: Vectors = await self.inner.embed(texts)
        return vectors


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder()
    embedder._load()
    return embedder


@pytest.fixture
def embedder(minilm: SentenceTransformerEmbedder) -> SharedEmbedder:
    return SharedEmbedder(minilm)
