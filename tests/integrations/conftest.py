"""Fixtures of the integration tests: one warmed embedder for the whole session."""

from __future__ import annotations

import os
from typing import Any

import pytest

from stagecache.config import PipelineConfig, parse_config
from stagecache.embeddings import SentenceTransformerEmbedder
from stagecache.testing import SharedEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def anyio_backend() -> str:
    # AutoGen's runtime, uvicorn and the openai client's async transport all need
    # asyncio; trio would exercise nothing here but a missing event loop.
    return "asyncio"


@pytest.fixture(scope="session")
def embedder(minilm: SentenceTransformerEmbedder) -> SharedEmbedder:
    """A session-wide view of the root conftest's model (async tests here run on
    asyncio only, so this one may be session-scoped)."""
    return SharedEmbedder(minilm)


#: Two CPU cores are shared by the whole test run: a 1 s cache timeout turns a slow
#: embedding into a cache.error and makes tests flaky, not more truthful. The
#: structural verifier keeps these tests about the integrations, not about where
#: the quality bar of the default verifier sits.
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
