"""Per-user memory: facts an agent remembered about a user, searched by meaning.

The memory-search stage finds the facts relevant to a query and puts them on the
turn; their hash becomes part of the cache key (the context fingerprint), so when a
user's memory changes, answers cached under the old memory no longer hit.

The store keeps, per user, a float32 matrix of fact vectors and the fact texts, in
memory. It is small by design (an agent's memory of one user is tens to thousands of
facts): exact search over it costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stagecache.errors import InputError
from stagecache.stages._keys import user_source
from stagecache.types import Embedder, Vectors

__all__ = ["MemoryStore"]


class _UserMemory:
    __slots__ = ("texts", "vectors")

    def __init__(self, dim: int) -> None:
        self.texts: list[str] = []
        self.vectors: Vectors = np.zeros((0, dim), dtype=np.float32)


class MemoryStore:
    """Facts per user, embedded with the pipeline's embedder.

    Args:
        embedder: embeds facts (the same embedder as the cache, so a query vector
            computed once serves both).
        max_facts_per_user: the oldest facts are forgotten past this.
    """

    __slots__ = ("_embedder", "_max", "_users")

    def __init__(self, embedder: Embedder, *, max_facts_per_user: int = 1000) -> None:
        self._embedder = embedder
        self._max = max_facts_per_user
        self._users: dict[str, _UserMemory] = {}

    async def remember(self, user_id: str, facts: str | Sequence[str]) -> int:
        """Store ``facts`` for ``user_id``; returns how many were new.

        Raises:
            InputError: an empty user id or an empty fact.
        """
        if not user_id:
            raise InputError("user_id: memory needs a non-empty user id")
        items = [facts] if isinstance(facts, str) else list(facts)
        if any(not f.strip() for f in items):
            raise InputError("facts: every fact must be a non-empty string")
        memory = self._users.get(user_id)
        known = set(memory.texts) if memory else set()
        new = [f for f in dict.fromkeys(items) if f not in known]
        if not new:
            return 0
        if hasattr(self._embedder, "purge_sources"):
            # Tie the embedding-cache rows to the user, so purge_user removes them.
            vectors = await self._embedder.embed(new, sources=(user_source(user_id),))  # type: ignore[call-arg]
        else:
            vectors = await self._embedder.embed(new)
        if memory is None:
            memory = self._users[user_id] = _UserMemory(vectors.shape[1])
        memory.texts.extend(new)
        memory.vectors = np.vstack([memory.vectors, vectors.astype(np.float32)])
        if len(memory.texts) > self._max:
            drop = len(memory.texts) - self._max
            memory.texts = memory.texts[drop:]
            memory.vectors = memory.vectors[drop:]
        return len(new)

    def facts(self, user_id: str) -> list[str]:
        """Every fact remembered for ``user_id``, oldest first."""
        memory = self._users.get(user_id)
        return list(memory.texts) if memory else []

    def search(
        self, user_id: str, vector: Vectors, *, k: int = 3, min_similarity: float = 0.3
    ) -> list[str]:
        """The ``k`` facts most similar to ``vector`` (cosine >= ``min_similarity``).

        Results are ordered by fact age, not by score, so the same set of facts gives
        the same context (and the same cache key) whatever the query.
        """
        memory = self._users.get(user_id)
        if memory is None or not memory.texts:
            return []
        scores = memory.vectors @ vector.reshape(-1)
        order = np.argsort(-scores)[:k]
        picked = sorted(int(i) for i in order if scores[i] >= min_similarity)
        return [memory.texts[i] for i in picked]

    def forget_user(self, user_id: str) -> int:
        """Forget every fact about ``user_id``; returns how many."""
        memory = self._users.pop(user_id, None)
        return len(memory.texts) if memory else 0
