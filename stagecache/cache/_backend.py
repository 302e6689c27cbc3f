"""The backend contract: where cache entries (answers, metadata, timestamps) live.

The engine keeps the vectors in per-scope indexes and a small record per entry in
memory; a backend keeps the full :class:`Entry`. The contract, written once here:

- Every method is async and must not block the event loop (blocking clients go
  through ``anyio.to_thread.run_sync``).
- Foreign errors are translated at the boundary: an unreachable or full store raises
  :class:`~stagecache.errors.BackendUnavailable`, anything else
  :class:`~stagecache.errors.CacheError`, with the original as ``__cause__``.
- ``put`` inserts or replaces by ``entry_id``; a write either happens or raises, so
  the engine can order its in-memory changes after a successful write.
- ``put_many(entries)`` is optional (not part of the protocol): where a backend
  has it, the engine's group commit writes a batch of concurrent stores with one
  call (one transaction for SQLite), else with one ``put`` each. It either writes
  them all or raises.
- ``stores_vectors``: whether the backend keeps ``Entry.vector`` (it must, to
  rebuild indexes after a restart or in another worker). A backend that does not
  receives ``b""`` and saves the memory.
- Expiry is the engine's job (it checks ``expires_at`` on every read); a backend
  may also expire entries natively (Redis TTLs) and report them as deletions.
- ``subscribe`` is the change-notification hook for backends shared between
  processes: the backend calls ``callback`` with a :class:`Change` for every write
  made by *another* process, and the engine updates its indexes. Local backends
  never call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

from stagecache.cache._scope import owner_key
from stagecache.cache._settings import KeyParts

__all__ = ["Backend", "Change", "Entry"]


class Entry(msgspec.Struct, kw_only=True):
    """One cached answer.

    Attributes:
        entry_id: unique id (16 hex digits).
        scope_key: the scope it belongs to (see :class:`~stagecache.cache.Scope`).
        scope_mode: ``per_user``, ``per_session`` or ``shared``.
        user_id: the user it is attributed to (``purge_user`` removes it).
        tenant: the tenant of that user (None: no tenant); ``purge_user`` and the
            per-user cap count a user inside its tenant.
        query: the query text as asked.
        answer: the cached answer.
        parts: the exact-match key parts.
        vector: the float32 embedding bytes (``b""`` when the backend does not
            store vectors).
        metadata: free-form string labels.
        created_at: when the answer was written (clock seconds).
        expires_at: when it stops being served.
        last_used: last store or hit, for LRU eviction.
        hits: times it answered a lookup.
        positive: positive feedbacks.
        negative: negative feedbacks.
    """

    entry_id: str
    scope_key: str
    scope_mode: str
    user_id: str | None
    tenant: str | None = None
    query: str
    answer: str
    parts: KeyParts
    vector: bytes = b""
    metadata: dict[str, str] = {}
    created_at: float
    expires_at: float
    last_used: float
    hits: int = 0
    positive: int = 0
    negative: int = 0

    @property
    def owner(self) -> str | None:
        """The (tenant, user) key the entry counts against (see ``owner_key``)."""
        return owner_key(self.tenant, self.user_id)


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """A write made by another process on a shared backend.

    Attributes:
        kind: ``put`` (``entry`` is set), ``delete`` (``entry_ids``), ``purge``
            (``entry_ids`` of a ``purge_user``: the engine also compacts the
            graphs they were in, so no purged vector stays in memory or in a
            saved file), ``scope`` (every entry of ``scope_key`` went) or
            ``clear`` (everything went).
    """

    kind: Literal["put", "delete", "purge", "scope", "clear"]
    entry: Entry | None = None
    entry_ids: tuple[str, ...] = ()
    scope_key: str | None = None


@runtime_checkable
class Backend(Protocol):
    """Storage of cache entries. See the module docstring for the contract."""

    name: str
    stores_vectors: bool

    async def open(self) -> None:
        """Connect or create the store. Called by ``SemanticCache.warm_up``."""

    async def aclose(self) -> None:
        """Release connections; idempotent."""

    async def put(self, entry: Entry) -> None:
        """Insert or replace ``entry``."""

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """The entries that exist among ``entry_ids``."""
        ...

    async def touch(
        self,
        entry_id: str,
        *,
        last_used: float,
        hits: int,
        positive: int,
        negative: int,
    ) -> None:
        """Update the counters of one entry (a hit or a feedback)."""

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Delete entries by id; returns how many existed."""
        ...

    async def delete_scope(self, scope_key: str) -> int:
        """Delete every entry of a scope; returns the count."""
        ...

    async def delete_user(
        self, user_id: str, tenant: str | None = None, *, all_tenants: bool = False
    ) -> int:
        """Delete every entry attributed to ``user_id`` of ``tenant`` (None: the
        user without a tenant), or of every tenant; returns the count."""
        ...

    async def clear(self) -> int:
        """Delete everything; returns the count."""
        ...

    async def count(self) -> int:
        """Number of entries stored."""
        ...

    def scan(
        self, scope_key: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[list[Entry]]:
        """Every entry (of one scope, or all), in batches, to rebuild indexes."""
        ...

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Register for changes made by other processes; returns an unsubscribe."""
        ...
