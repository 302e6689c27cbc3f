"""Shared fixtures: async tests run on asyncio and trio; one real model per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import stagecache
from stagecache.config import PipelineConfig, build
from stagecache.testing import ScriptedLLM, SharedEmbedder


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The real all-MiniLM-L6-v2 embedder, loaded once for the whole session."""
    from stagecache.embeddings import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    embedder._load()
    return embedder


@pytest.fixture
def embedder(minilm: Any) -> SharedEmbedder:
    """The session's model, safe to hand to any number of pipelines."""
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
        return build(config, llm=llm, **options), llm

    return make
