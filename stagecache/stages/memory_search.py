"""The memory-search stage: puts the user's relevant memories on the turn.

Memory is searched for the caller's user inside the caller's tenant.

It embeds the query once (the cache check reuses ``turn.embedding``), searches the
caller's memory, and sets ``turn.memory`` and ``turn.context_fingerprint``. Without
a user id there is no memory to search. Failure policy ``continue``: a failed memory
search leaves the turn without memory context, and the cache check then skips
caching (a fingerprint it cannot trust must not produce a hit).
"""

from __future__ import annotations

from typing import Annotated, Protocol

import msgspec

from stagecache._model import Turn
from stagecache._validate import CheckNumbers, Seconds
from stagecache.errors import ConfigError
from stagecache.memory import MemoryStore
from stagecache.stages._keys import ensure_embedding, fingerprint
from stagecache.types import Embedder, FailurePolicy

__all__ = ["MemorySearch", "MemorySearchConfig"]


class MemorySearchConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``memory_search`` stage.

    Attributes:
        k: at most this many facts go into the context.
        min_similarity: facts less similar to the query than this are left out.
        timeout_s: the stage's time limit.
    """

    k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    min_similarity: Annotated[float, msgspec.Meta(ge=-1, le=1)] = 0.35
    timeout_s: Seconds | None = 2.0


class _Ctx(Protocol):
    embedder: Embedder | None
    memory: MemoryStore | None


class MemorySearch:
    """Finds the caller's relevant memories and fingerprints them."""

    __slots__ = ("_embedder", "_k", "_memory", "_min", "timeout_s")
    Config = MemorySearchConfig
    name = "memory_search"
    failure_policy: FailurePolicy = "continue"

    def __init__(
        self,
        memory: MemoryStore,
        embedder: Embedder,
        config: MemorySearchConfig | None = None,
    ) -> None:
        config = config or MemorySearchConfig()
        self._memory = memory
        self._embedder = embedder
        self._k = config.k
        self._min = config.min_similarity
        self.timeout_s = config.timeout_s

    @classmethod
    def from_config(cls, config: MemorySearchConfig, ctx: _Ctx) -> MemorySearch:
        if ctx.memory is None or ctx.embedder is None:
            raise ConfigError(
                "the memory_search stage needs an embedder and a memory store",
                field="stages",
            )
        return cls(ctx.memory, ctx.embedder, config)

    async def __call__(self, turn: Turn) -> Turn:
        user_id, tenant = turn.caller.user_id, turn.caller.tenant
        if not user_id or not self._memory.facts(user_id, tenant=tenant):
            return turn
        vector = await ensure_embedding(turn, self._embedder)
        turn.memory = self._memory.search(
            user_id, vector, tenant=tenant, k=self._k, min_similarity=self._min
        )
        turn.context_fingerprint = fingerprint(turn.memory)
        return turn
