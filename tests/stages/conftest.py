"""A real MiniLM embedder, loaded once per test session and shared by pipelines."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import stagecache
from stagecache.config import PipelineConfig, build
from stagecache.embeddings import SentenceTransformerEmbedder
from stagecache.testing import ScriptedLLM
from stagecache.types import Vectors

VERIFIER = os.environ.get("STAGECACHE_TEST_VERIFIER", "")


class SharedEmbedder:
    """The real embedder without warm_up/aclose, so a pipeline cannot unload it."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.fail: BaseException | None = None
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return await self.inner.embed(texts)


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
) -> Callable[..., tuple[stagecache.Pipeline, ScriptedLLM]]:
    def make(
        fn: Callable[[str], str] = echo,
        *,
        config: PipelineConfig | None = None,
        **options: Any,
    ) -> tuple[stagecache.Pipeline, ScriptedLLM]:
        llm = options.pop("llm", None) or ScriptedLLM(fn)
        if config is None and VERIFIER:
            config = PipelineConfig(verifier={"kind": VERIFIER})
        options.setdefault("embedder", embedder)
        pipeline = build(config, llm=llm, **options)
        return pipeline, llm

    return make
