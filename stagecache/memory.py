"""Per-user memory: facts an agent remembered about a user, searched by meaning.

The memory-search stage finds the facts relevant to a query and puts them on the
turn; their hash becomes part of the cache key (the context fingerprint), so when a
user's memory changes, answers cached under the old memory no longer hit.

The store keeps, per user, a float32 matrix of fact vectors and the fact texts, in
memory. It is small by design (an agent's memory of one user is tens to thousands of
facts): exact search over it costs microseconds.

A user lives inside a tenant: facts remembered for user "1001" of tenant "acme" are
found only by ``Caller(user_id="1001", tenant="acme")``; ``tenant=None`` is the user
without a tenant, another user again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stagecache._model import check_id
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
        # (tenant, user) -> the user's facts
        self._users: dict[tuple[str | None, str], _UserMemory] = {}

    async def remember(
        self, user_id: str, facts: str | Sequence[str], *, tenant: str | None = None
    ) -> int:
        """Store ``facts`` for ``user_id`` of ``tenant``; returns how many were new.

        Raises:
            InputError: a bad user id or tenant (see ``Caller``), or an empty fact.
        """
        key = _key(user_id, tenant)
        items = [facts] if isinstance(facts, str) else list(facts)
        if any(not isinstance(f, str) or not f.strip() for f in items):
            raise InputError("facts: every fact must be a non-empty string")
        memory = self._users.get(key)
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
            memory = self._users[key] = _UserMemory(vectors.shape[1])
        memory.texts.extend(new)
        memory.vectors = np.vstack([memory.vectors, vectors.astype(np.float32)])
        if len(memory.texts) > self._max:
            drop = len(memory.texts) - self._max
            memory.texts = memory.texts[drop:]
            memory.vectors = memory.vectors[drop:]
        return len(new)

    def facts(self, user_id: str, *, tenant: str | None = None) -> list[str]:
        """Every fact remembered for ``user_id`` of ``tenant``, oldest first."""
        memory = self._users.get(_key(user_id, tenant))
        return list(memory.texts) if memory else []

    def search(
        self,
        user_id: str,
        vector: Vectors,
        *,
        tenant: str | None = None,
        k: int = 3,
        min_similarity: float = 0.3,
    ) -> list[str]:
        """The ``k`` facts most similar to ``vector`` (cosine >= ``min_similarity``)
        among those of ``user_id`` of ``tenant``.

        Results are ordered by fact age, not by score, so the same set of facts gives
        the same context (and the same cache key) whatever the query.
        """
        memory = self._users.get(_key(user_id, tenant))
        if memory is None or not memory.texts:
            return []
        scores = memory.vectors @ vector.reshape(-1)
        order = np.argsort(-scores)[:k]
        picked = sorted(int(i) for i in order if scores[i] >= min_similarity)
        return [memory.texts[i] for i in picked]

    def forget_user(
        self, user_id: str, *, tenant: str | None = None, all_tenants: bool = False
    ) -> int:
        """Forget every fact about ``user_id`` of ``tenant`` (or of every tenant
        with ``all_tenants``); returns how many."""
        key = _key(user_id, tenant)
        keys = [k for k in self._users if k[1] == user_id] if all_tenants else [key]
        memories = [self._users.pop(k) for k in keys if k in self._users]
        return sum(len(m.texts) for m in memories)


def _key(user_id: object, tenant: object) -> tuple[str | None, str]:
    """The (tenant, user) key of a user's memory; raises InputError for bad ids."""
    user = check_id(user_id, "user_id")
    if user is None:
        raise InputError("user_id: memory needs a user id (a non-empty string)")
    return check_id(tenant, "tenant"), user
