"""The state every part of the engine shares: settings, records, scopes, policy.

:class:`CacheCore` holds the bookkeeping; ``_maintain`` adds removal, eviction and
cold scopes on top of it, and ``_engine`` adds the public lookup and store. They
are split by concept only: :class:`~stagecache.cache.SemanticCache` is the one
class users see.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import numpy as np
from numpy.typing import NDArray

from stagecache._model import Caller
from stagecache.cache._backend import Backend, Change, Entry
from stagecache.cache._flight import SingleFlight
from stagecache.cache._index import FlatIndex, HnswIndex, ScopeIndex, build_index
from stagecache.cache._memory import MemoryBackend
from stagecache.cache._scope import Scope, query_key, resolve_scope
from stagecache.cache._settings import CacheSettings, KeyParts
from stagecache.cache._sqlite import SqliteBackend
from stagecache.cache._state import Record, ScopeState
from stagecache.cache._tally import LookupTally
from stagecache.cache._tallystore import counter_store
from stagecache.errors import CacheError
from stagecache.pipeline._events import Event, EventBus
from stagecache.types import Verifier

__all__ = ["CacheCore", "make_backend", "new_entry_id"]


def make_backend(settings: CacheSettings) -> Backend:
    """The backend named by ``settings.backend`` (not opened yet)."""
    b = settings.backend
    if b.kind == "sqlite":
        if not b.path:
            raise CacheError("backend.path: the sqlite backend needs a file path")
        return SqliteBackend.from_settings(settings)
    if b.kind == "redis":
        from stagecache.cache._redis import RedisBackend

        return RedisBackend.from_settings(settings)
    return MemoryBackend()


def new_entry_id() -> str:
    """16 random hex digits (64 bits: no collision in any realistic cache)."""
    return secrets.token_hex(8)


class CacheCore:
    """Shared state of the engine (see the module docstring)."""

    def __init__(
        self,
        settings: CacheSettings,
        *,
        backend: Backend | None = None,
        dim: int = 384,
        verifier: Verifier | None = None,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        settings.check()
        self._settings = settings
        self._backend = backend if backend is not None else make_backend(settings)
        self._dim = dim
        self.verifier = verifier
        self._events = events
        self._clock = clock
        self._patterns = settings.ttl_rules()  # RE2: linear in the query
        # Every entry, least recently used first: the global LRU order is the dict's.
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._scopes: dict[str, ScopeState] = {}
        # owner_key(tenant, user) -> its entry ids: the per-user cap and purge.
        self._by_user: dict[str, set[str]] = {}
        self._hot: OrderedDict[str, None] = OrderedDict()  # loaded scopes, LRU first
        # (expires_at, id) min-heap; stale pairs (refreshed entries) are skipped.
        self._expiry: list[tuple[float, str]] = []
        self._changes: list[Change] = []
        self._lock: anyio.Lock | None = None
        self._flights = SingleFlight()
        self._unsubscribe: Callable[[], None] | None = None
        self._opened = False
        #: Hits and misses of every process sharing the backend (``_tally``).
        self.tally = LookupTally(counter_store(self._backend))

    @property
    def settings(self) -> CacheSettings:
        """The settings in force."""
        return self._settings

    @property
    def backend(self) -> Backend:
        """The backend holding the entries."""
        return self._backend

    @property
    def dim(self) -> int:
        """The embedding dimension (settable until the first store)."""
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        if value != self._dim and self._records:
            raise CacheError(
                f"cannot change the dimension from {self._dim} to {value}: the "
                "cache already holds entries"
            )
        self._dim = int(value)

    @property
    def _io_timeout(self) -> float:
        """The limit of one backend write, inside shielded sections."""
        return self._settings.timeout_s

    @property
    def _write_lock(self) -> anyio.Lock:
        # Created lazily: anyio locks bind to the running event loop's backend.
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    def scope_for(self, caller: Caller) -> Scope | str:
        """The caller's scope, or a skip reason (``no_user_id``, ``no_session_id``)."""
        return resolve_scope(self._settings, caller)

    def ttl_for(self, query: str) -> float:
        """TTL of a new entry: the first matching ``ttl_patterns``, else default."""
        for pattern, ttl in self._patterns:
            if pattern.search(query):
                return ttl
        return self._settings.default_ttl

    def stats(self) -> dict[str, int]:
        """Counts: entries, scopes, hot/cold/flat/hnsw scopes, users, flights.

        ``users`` counts (tenant, user) pairs: user "1001" of two tenants is two.
        """
        hot = [s.index for s in self._scopes.values() if s.index is not None]
        return {
            "entries": len(self._records),
            "scopes": len(self._scopes),
            "hot_scopes": len(hot),
            "cold_scopes": len(self._scopes) - len(hot),
            "flat_scopes": sum(isinstance(i, FlatIndex) for i in hot),
            "hnsw_scopes": sum(isinstance(i, HnswIndex) for i in hot),
            "users": len(self._by_user),
            "flights": len(self._flights),
        }

    # -- bookkeeping -------------------------------------------------------------

    def _add_record(
        self,
        state: ScopeState,
        entry_id: str,
        owner: str | None,
        parts: KeyParts,
        query: str,
        expires_at: float,
        last_used: float,
    ) -> Record:
        # The owner key is as good as the user id in the de-duplication key: a
        # scope has one tenant, so inside it owners and users match one to one.
        record = Record(
            state,
            owner,
            parts,
            query_key(query, parts, owner),
            expires_at,
            last_used,
        )
        self._records[entry_id] = record
        state.by_qkey[record.qkey] = entry_id
        if owner is not None:
            self._by_user.setdefault(owner, set()).add(entry_id)
        heapq.heappush(self._expiry, (expires_at, entry_id))
        return record

    def _drop_record(self, entry_id: str) -> Record | None:
        record = self._records.pop(entry_id, None)
        if record is None:
            return None
        state = record.state
        if state.by_qkey.get(record.qkey) == entry_id:
            del state.by_qkey[record.qkey]
        if record.owner is not None:
            ids = self._by_user.get(record.owner)
            if ids is not None:
                ids.discard(entry_id)
                if not ids:
                    del self._by_user[record.owner]
        return record

    def _touch(self, entry_id: str, record: Record, now: float) -> None:
        record.last_used = now
        self._records.move_to_end(entry_id)
        if record.state.index is not None:
            self._mark_hot(record.state)

    def _mark_hot(self, state: ScopeState) -> None:
        self._hot[state.key] = None
        self._hot.move_to_end(state.key)

    def _build(self, ids: list[str], vectors: NDArray[np.float32]) -> ScopeIndex:
        s = self._settings
        return build_index(
            self._dim,
            ids,
            vectors,
            flat_max=s.flat_max_entries,
            m=s.hnsw_m,
            ef_construction=s.hnsw_ef_construction,
            ef=s.hnsw_ef_search,
        )

    def _vectors_of(self, entries: list[Entry]) -> NDArray[np.float32]:
        expected = self._dim * 4
        for e in entries:
            if len(e.vector) != expected:
                raise CacheError(
                    f"entry {e.entry_id!r} has a {len(e.vector) // 4}-dim vector but "
                    f"the cache is configured for {self._dim}: the backend holds "
                    "entries of "
                    "another embedding model; clear it or use another backend path"
                )
        flat = np.frombuffer(b"".join(e.vector for e in entries), dtype=np.float32)
        return flat.reshape(len(entries), self._dim)

    def _publish(self, event: Event) -> None:
        if self._events is not None:
            self._events.publish(event)

    def _now(self) -> float:
        return float(self._clock())
