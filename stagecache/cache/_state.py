"""The engine's in-memory bookkeeping: one record per entry, one state per scope.

A :class:`Record` is what a lookup needs to decide without touching the backend
(scope, key parts, expiry, recency). The answer and the query text stay in the
backend and are fetched only for candidates that pass. A :class:`ScopeState` holds
the scope's index (``None`` while the scope is cold, unloaded to disk), its
de-duplication map and the lock that serialises index operations: an index may be
searched in a worker thread, and neither numpy rows nor hnswlib's ``resize_index``
may change under a running search.
"""

from __future__ import annotations

import anyio

from stagecache.cache._index import ScopeIndex
from stagecache.cache._settings import KeyParts

__all__ = ["Record", "ScopeState"]


class Record:
    """One entry, as the engine tracks it (about 100 bytes)."""

    __slots__ = ("expires_at", "last_used", "owner", "parts", "qkey", "state")

    def __init__(
        self,
        state: ScopeState,
        owner: str | None,
        parts: KeyParts,
        qkey: int,
        expires_at: float,
        last_used: float,
    ) -> None:
        self.state = state
        self.owner = owner  # owner_key(tenant, user): caps and purges count it
        self.parts = parts
        self.qkey = qkey
        self.expires_at = expires_at
        self.last_used = last_used


class ScopeState:
    """One scope partition: its index, de-duplication map and lock.

    Attributes:
        key: the scope key.
        mode: the scope mode.
        hash: the telemetry hash of the key.
        index: the live index, or None while cold.
        by_qkey: de-duplication key -> entry id; its values are the scope's ids.
        lock: serialises index operations (see the module docstring).
        saved: the files in ``index_dir`` hold exactly ``index`` (it was loaded
            from them and not changed since), so unloading it writes nothing.
    """

    __slots__ = ("_lock", "by_qkey", "hash", "index", "key", "mode", "saved")

    def __init__(
        self, key: str, mode: str, hash_: str, index: ScopeIndex | None
    ) -> None:
        self.key = key
        self.mode = mode
        self.hash = hash_
        self.index = index
        self.by_qkey: dict[int, str] = {}
        self.saved = False
        self._lock: anyio.Lock | None = None

    @property
    def lock(self) -> anyio.Lock:
        """The scope's lock, created on first use (most of 10,000 scopes never
        contend, and an asyncio lock costs a few hundred bytes)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    def __len__(self) -> int:
        return len(self.by_qkey)
