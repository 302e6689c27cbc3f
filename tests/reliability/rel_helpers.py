"""Fault injectors and doubles shared by the reliability suites.

Each wraps a real component and misbehaves at one chosen call; everything else
goes to the real thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import numpy as np

from stagecache._model import Turn, Usage
from stagecache.cache import Change, Entry
from stagecache.errors import BackendUnavailable, EmbeddingError
from stagecache.stages.llm import Completion
from stagecache.types import Vectors


class FaultyEmbedder:
    """Delegates to ``inner``; call number ``at`` (1-based) raises or hangs.

    ``mode="hang"`` waits until ``release`` is set (or forever).
    """

    def __init__(self, inner: Any, *, at: int, mode: str = "raise") -> None:
        self.inner = inner
        self.at = at
        self.mode = mode
        self.calls = 0
        self.release = anyio.Event()

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        if self.calls == self.at:
            if self.mode == "hang":
                await self.release.wait()
            else:
                raise EmbeddingError("injected: the embedder failed")
        vectors: Vectors = await self.inner.embed(texts)
        return vectors


class FaultyBackend:
    """A real backend whose ``op`` misbehaves on its ``at``-th call (1-based).

    Modes: ``raise`` (BackendUnavailable), ``hang`` (waits for ``release``, a
    backend that stopped answering) and ``slow`` (sleeps ``delay_s`` first, so a
    test can cancel in the middle of the operation).
    """

    def __init__(
        self,
        inner: Any,
        *,
        op: str,
        at: int = 1,
        mode: str = "raise",
        delay_s: float = 0.05,
    ) -> None:
        self.inner = inner
        self.op = op
        self.at = at
        self.mode = mode
        self.delay_s = delay_s
        self.calls = 0
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.name = inner.name
        self.stores_vectors = inner.stores_vectors

    async def _fault(self, op: str) -> None:
        if op != self.op:
            return
        self.calls += 1
        if self.calls != self.at:
            return
        self.entered.set()
        if self.mode == "raise":
            raise BackendUnavailable(f"injected: {op} failed")
        if self.mode == "hang":
            await self.release.wait()
        else:
            await anyio.sleep(self.delay_s)

    async def open(self) -> None:
        await self.inner.open()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def put(self, entry: Entry) -> None:
        await self._fault("put")
        await self.inner.put(entry)

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        await self._fault("get_many")
        found: dict[str, Entry] = await self.inner.get_many(entry_ids)
        return found

    async def touch(self, entry_id: str, **counters: Any) -> None:
        await self._fault("touch")
        await self.inner.touch(entry_id, **counters)

    async def delete(self, entry_ids: Sequence[str]) -> int:
        await self._fault("delete")
        return int(await self.inner.delete(entry_ids))

    async def delete_scope(self, scope_key: str) -> int:
        await self._fault("delete_scope")
        return int(await self.inner.delete_scope(scope_key))

    async def delete_user(self, user_id: str) -> int:
        await self._fault("delete_user")
        return int(await self.inner.delete_user(user_id))

    async def clear(self) -> int:
        return int(await self.inner.clear())

    async def count(self) -> int:
        return int(await self.inner.count())

    def scan(
        self, scope_key: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[list[Entry]]:
        it: AsyncIterator[list[Entry]] = self.inner.scan(scope_key, batch=batch)
        return it

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        unsubscribe: Callable[[], None] = self.inner.subscribe(callback)
        return unsubscribe


class UserLLM:
    """A scripted model whose answer names the asking user (leaks are greppable).

    Args:
        delay_s: how long each call takes.
        garbage: if set, what ``complete`` returns instead of a Completion.
    """

    model_id = "user-llm"

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def complete(self, turn: Turn) -> Completion:
        self.calls += 1
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        text = f"[{turn.caller.user_id}] answer to: {turn.query}"
        return Completion(text=text, usage=Usage(10, 10), model=self.model_id)


class TableEmbedder:
    """Precomputed real MiniLM vectors for a fixed set of texts (the load test)."""

    def __init__(self, table: dict[str, np.ndarray], *, model_id: str) -> None:
        self.table = table
        self.model_id = model_id
        self.dim = len(next(iter(table.values())))
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` random L2-normalised float32 rows (distinct with overwhelming odds)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v
