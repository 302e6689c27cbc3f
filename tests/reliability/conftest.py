"""Fixtures of the reliability suites: the real MiniLM embedder, shared per session,
and pipelines built around it (the pattern of ``tests/stages/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

import stagecache
from stagecache.config import PipelineConfig, build
from stagecache.embeddings import SentenceTransformerEmbedder
from stagecache.testing import ScriptedLLM
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


def echo(prompt: str) -> str:
    return f"answer to: {prompt}"


@pytest.fixture
def make_pipeline(
    embedder: SharedEmbedder,
) -> Callable[..., tuple[stagecache.Pipeline, Any]]:
    """``make(fn, config=..., embedder=..., llm=..., cache=...)`` -> (pipeline, llm)."""

    def make(
        fn: Callable[[str], str] = echo,
        *,
        config: PipelineConfig | None = None,
        **options: Any,
    ) -> tuple[stagecache.Pipeline, Any]:
        llm = options.pop("llm", None) or ScriptedLLM(fn)
        options.setdefault("embedder", embedder)
        pipeline = build(config, llm=llm, **options)
        return pipeline, llm

    return make
