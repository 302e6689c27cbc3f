"""The embedding cache: an in-memory LRU in front of an optional SQLite store.

Key: ``sha256(f"{version}:{model_id}:{normalised text}")``, so a different model or
a bumped ``version`` never sees old vectors (and rows also carry ``model_id`` and
``dim``, checked on read).

Normalisation (:func:`normalize_text`), in this order: Unicode NFC; strip; collapse
every run of Unicode whitespace to one space; ``casefold()`` (then NFC again) only
when ``casefold=True``. Case is kept by default: the cache must not decide for a
cased model that "US" and "us" mean the same. The *normalised* text is what gets
embedded, so a key always maps to one vector whichever spelling came first.

Costs: a memory hit runs on the event loop with no I/O (a dict lookup and a copy,
microseconds). Everything that touches SQLite (lookups of memory misses, writes,
purges) runs in a worker thread via ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import msgspec
import numpy as np

from stagecache.embeddings._store import VectorStore
from stagecache.embeddings._validation import (
    check_texts,
    empty_vectors,
    validate_vectors,
)
from stagecache.errors import EmbeddingError
from stagecache.pipeline._events import EmbeddingCacheStats
from stagecache.types import Embedder, Vectors

if TYPE_CHECKING:
    from stagecache.pipeline._events import EventBus

__all__ = ["CacheStats", "CachedEmbedder", "normalize_text"]


def normalize_text(text: str, *, casefold: bool = False) -> str:
    """The form of ``text`` that the cache keys on and embeds.

    Args:
        text: the raw text.
        casefold: also fold case (``"Straße"`` and ``"STRASSE"`` become equal).

    Returns:
        NFC-normalised, stripped text with whitespace runs collapsed to one space.
    """
    out = " ".join(unicodedata.normalize("NFC", text).split())
    if casefold:
        out = unicodedata.normalize("NFC", out.casefold())
    return out


class CacheStats(msgspec.Struct):
    """Counters of a :class:`CachedEmbedder` (per text, not per call).

    Attributes:
        hits: texts answered from the cache (memory or disk).
        misses: texts sent to the inner embedder (after de-duplication).
        disk_hits: the hits that came from SQLite rather than memory.
    """

    hits: int = 0
    misses: int = 0
    disk_hits: int = 0


class _Entry:
    __slots__ = ("sources", "vector")

    def __init__(self, vector: Vectors, sources: set[str]) -> None:
        self.vector = vector
        self.sources = sources


class CachedEmbedder:
    """Caches the vectors of an inner embedder, in memory and optionally on disk.

    Args:
        inner: the embedder that computes misses.
        path: a SQLite file for persistent rows; None keeps rows in memory only.
        memory_items: the size of the in-memory LRU.
        casefold: fold case when normalising (see :func:`normalize_text`).
        version: part of every key; bump it to ignore all earlier rows.
        events: publishes :class:`~stagecache.pipeline._events.EmbeddingCacheStats`
            (this call's hits and misses) after each call when given.
    """

    __slots__ = (
        "_events",
        "_inner",
        "_memory",
        "_prefix",
        "_store",
        "casefold",
        "memory_items",
        "stats",
        "version",
    )

    def __init__(
        self,
        inner: Embedder,
        *,
        path: str | os.PathLike[str] | None = None,
        memory_items: int = 10_000,
        casefold: bool = False,
        version: int = 1,
        events: EventBus | None = None,
    ) -> None:
        if memory_items < 0:
            raise ValueError(f"memory_items must be >= 0, got {memory_items}")
        self._inner = inner
        self._store = VectorStore(path) if path is not None else None
        self._memory: OrderedDict[str, _Entry] = OrderedDict()
        self.memory_items = memory_items
        self.casefold = casefold
        self.version = version
        self._events = events
        self._prefix = f"{version}:{inner.model_id}:"
        self.stats = CacheStats()

    @property
    def inner(self) -> Embedder:
        """The wrapped embedder."""
        return self._inner

    @property
    def model_id(self) -> str:
        """The inner embedder's model id."""
        return self._inner.model_id

    @property
    def dim(self) -> int:
        """The inner embedder's dimension."""
        return self._inner.dim

    def key(self, text: str) -> str:
        """The cache key of ``text`` (after normalisation)."""
        norm = normalize_text(text, casefold=self.casefold)
        return hashlib.sha256((self._prefix + norm).encode("utf-8")).hexdigest()

    async def warm_up(self) -> None:
        """Warm the inner embedder up and open the SQLite file."""
        warm = getattr(self._inner, "warm_up", None)
        if warm is not None:
            await warm()
        if self._store is not None:
            await anyio.to_thread.run_sync(self._store.open)

    async def embed(
        self, texts: Sequence[str], *, sources: Sequence[str] = ()
    ) -> Vectors:
        """Embed ``texts``, from the cache where possible.

        Args:
            texts: the texts (validated as every embedder does).
            sources: ids (user, scope, ...) to tie the rows of this call to, so
                that :meth:`purge_sources` can remove them.

        Returns:
            An array of shape ``(len(texts), dim)``; the rows are copies.

        Raises:
            InputError: for empty, whitespace-only or invalid-Unicode texts.
            EmbeddingError: the inner embedder or the SQLite store failed.
        """
        # No clipping here: the inner embedder clips what it embeds.
        items = check_texts(texts, max_chars=None, model_id=self.model_id)
        if not items:
            return empty_vectors(self.dim)
        src = set(sources)
        norms = [normalize_text(t, casefold=self.casefold) for t in items]
        keys = [
            hashlib.sha256((self._prefix + n).encode("utf-8")).hexdigest()
            for n in norms
        ]
        found: dict[str, Vectors] = {}
        new_sources: list[str] = []
        for k in keys:
            entry = self._memory.get(k)
            if entry is not None:
                self._memory.move_to_end(k)
                found[k] = entry.vector
                if not src <= entry.sources:
                    entry.sources |= src
                    new_sources.append(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        texts_of = dict(zip(keys, norms, strict=True))
        disk_hits = 0
        if missing and self._store is not None:
            on_disk = await anyio.to_thread.run_sync(
                self._store.get_many, missing, self.model_id, self._known_dim()
            )
            disk_hits = len(on_disk)
            for k, vec in on_disk.items():
                found[k] = vec
                self._remember(k, vec, src)
            new_sources.extend(on_disk)
            missing = [k for k in missing if k not in on_disk]
        if missing:
            computed = await self._inner.embed([texts_of[k] for k in missing])
            computed = validate_vectors(
                computed, len(missing), self._known_dim(), self.model_id
            )
            rows = list(zip(missing, computed, strict=True))
            if self._store is not None:
                await anyio.to_thread.run_sync(
                    self._store.put_many,
                    rows,
                    self.model_id,
                    computed.shape[1],
                    tuple(src),
                )
            for k, vec in rows:
                found[k] = vec
                self._remember(k, vec, src)
        if src and new_sources and self._store is not None:
            await anyio.to_thread.run_sync(
                self._store.add_sources, new_sources, tuple(src)
            )
        hits = len(keys) - len(missing)
        self.stats.hits += hits
        self.stats.misses += len(missing)
        self.stats.disk_hits += disk_hits
        if self._events is not None and self._events.active:
            self._events.publish(EmbeddingCacheStats(hits=hits, misses=len(missing)))
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _known_dim(self) -> int | None:
        # An OpenAI embedder learns its dimension from its first reply.
        try:
            return self._inner.dim
        except EmbeddingError:
            return None

    def _remember(self, key: str, vector: Vectors, sources: set[str]) -> None:
        if self.memory_items == 0:
            return
        vector = np.array(vector, dtype=np.float32)
        vector.flags.writeable = False
        self._memory[key] = _Entry(vector, set(sources))
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    async def purge_sources(self, source_id: str) -> int:
        """Remove every row tied to ``source_id`` (from memory and disk).

        Args:
            source_id: an id passed in ``sources`` of earlier calls.

        Returns:
            The number of distinct rows removed.
        """
        removed = {k for k, e in self._memory.items() if source_id in e.sources}
        if self._store is not None:
            keys = await anyio.to_thread.run_sync(self._store.purge_source, source_id)
            removed.update(keys)
        for k in removed:
            self._memory.pop(k, None)
        return len(removed)

    def clear_memory(self) -> None:
        """Empty the in-memory LRU (the SQLite rows stay)."""
        self._memory.clear()

    async def aclose(self) -> None:
        """Close the SQLite file and the inner embedder."""
        if self._store is not None:
            await anyio.to_thread.run_sync(self._store.close)
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> CachedEmbedder:
        await self.warm_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = self._store.path if self._store is not None else "memory"
        return f"CachedEmbedder({self._inner!r}, store={str(where)!r})"
