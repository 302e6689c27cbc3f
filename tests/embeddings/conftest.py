"""Shared fixtures: one model load and one ONNX export per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stagecache.embeddings import OnnxEmbedder, SentenceTransformerEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stagecache cache dir shared by the session (model copy + ONNX exports)."""
    env = os.environ.get("STAGECACHE_TEST_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("stagecache-cache")


@pytest.fixture(scope="session")
def st_embedder(cache_dir: Path) -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder(cache_dir=cache_dir)
    _ = embedder.dim  # loads the model once for the session
    return embedder


@pytest.fixture(scope="session")
def onnx_int8(cache_dir: Path) -> OnnxEmbedder:
    embedder = OnnxEmbedder(quantize="int8", cache_dir=cache_dir)
    _ = embedder.dim  # exports (once) and loads
    return embedder


@pytest.fixture(scope="session")
def onnx_fp32(cache_dir: Path, onnx_int8: OnnxEmbedder) -> OnnxEmbedder:
    embedder = OnnxEmbedder(quantize="fp32", cache_dir=cache_dir)
    _ = embedder.dim
    return embedder
