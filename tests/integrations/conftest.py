"""Fixtures of the integration tests: one warmed embedder for the whole session."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from stagecache.config import PipelineConfig, parse_config
from stagecache.embeddings import SentenceTransformerEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def anyio_backend() -> str:
    # AutoGen's runtime, uvicorn and the openai client's async transport all need
    # asyncio; trio would exercise nothing here but a missing event loop.
    return "asyncio"


class SharedEmbedder:
    """The session's model behind the Embedder protocol, without ``aclose``.

    A pipeline closes its components on exit; this thin view keeps it from
    unloading the model every other test module still uses.
    """

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self._inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        return await self._inner.embed(texts)


@pytest.fixture(scope="session")
def embedder() -> SharedEmbedder:
    return SharedEmbedder(SentenceTransformerEmbedder())


#: Two CPU cores are shared by the whole test run: a 1 s cache timeout turns a slow
#: embedding into a cache.error and makes tests flaky, not more truthful. The
#: structural verifier: the default learned one (max_wrong_hit_rate 0.01) rejects
#: even "How do I ..." / "How can I ..." today; these tests are about the
#: integrations, not about where the quality bar sits.
RAW_CONFIG: dict[str, Any] = {
    "verifier": {"kind": "structural"},
    "cache": {"timeout_s": 30.0},
}


@pytest.fixture(scope="session")
def pipeline_config() -> PipelineConfig:
    return parse_config(RAW_CONFIG)


@pytest.fixture(scope="session")
def pipeline_options(
    embedder: SharedEmbedder, pipeline_config: PipelineConfig
) -> dict[str, Any]:
    """Keyword arguments for ``Pipeline.default`` (and the integrations' helpers)."""
    return {"embedder": embedder, "config": pipeline_config}
