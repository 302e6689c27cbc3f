"""Helpers shared by the embeddings tests (a unique module name: no collisions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stagecache.types import Embedder, Vectors

SENTENCES = [
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
    "Wie setze ich mein Passwort zurück?",
    "a",
    "Refunds are processed within 5 business days of receiving the item.",
    "emoji 🙂 and CJK 日本語 text",
]


class Counting:
    """Delegates to a real embedder and records every batch it receives."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.batches.append(list(texts))
        return await self.inner.embed(texts)


def cosine_rows(a: Vectors, b: Vectors) -> Vectors:
    """Row-wise cosine of two arrays of vectors."""
    num = (a * b).sum(axis=1)
    out: Vectors = num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return out
