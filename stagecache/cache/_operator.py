"""What an operator does to single entries: check, delete, and adopt exported ones.

Mixed into :class:`~stagecache.cache.SemanticCache`; the same locking rules as the
engine's other writes (the write lock, backend before memory, shielded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from stagecache.cache._backend import Entry
from stagecache.cache._maintain import Maintenance

__all__ = ["OperatorAccess"]


class OperatorAccess(Maintenance):
    """Entry-level operations of the engine (see the module docstring)."""

    #: The engine's: raises ``BackendUnavailable`` while the cache is off.
    _check_up: Callable[[], None]

    def has(self, entry_id: str) -> bool:
        """Whether ``entry_id`` is a live entry of this cache (expired ones count
        until the next sweep)."""
        return entry_id in self._records

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Remove entries by id (an operator's correction); returns how many went."""
        self._check_up()
        async with self._write_lock:
            known = [i for i in dict.fromkeys(entry_ids) if i in self._records]
            return await self._remove(known, "operator")

    async def adopt_entries(self, entries: Sequence[Entry]) -> int:
        """Write whole entries (an export of another cache) as they are: same ids,
        scopes, key parts, timestamps and counters; returns how many entries the
        caps then evicted (least recently used first, imported ones included).

        Raises:
            CacheError: a vector of another dimension than the cache's.
        """
        self._check_up()
        if self._changes:
            await self.apply_changes()
        self._vectors_of(list(entries))  # every vector checked before any write
        async with self._write_lock:
            with anyio.CancelScope(shield=True):
                put_many = getattr(self._backend, "put_many", None)
                if put_many is not None:
                    await put_many(list(entries))
                else:
                    for entry in entries:
                        await self._backend.put(entry)
            await self._adopt(list(entries), from_files=False)
            return await self._remove(self._enforce_caps_after_load(), "lru")
