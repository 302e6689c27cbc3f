"""The semantic cache engine: scopes, exact key parts, per-scope vector indexes,
TTL, LRU caps and pluggable backends (memory, sqlite, redis).

Typical use (the cache stages do this for you)::

    cache = SemanticCache(CacheSettings(threshold=0.9))
    async with cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        if isinstance(scope, Scope):
            found = await cache.lookup(scope, vector, parts, query)
            if found.hit is None:
                await cache.store(scope, query, vector, parts, answer)
"""

from __future__ import annotations

from stagecache.cache._backend import Backend, Change, Entry
from stagecache.cache._core import make_backend
from stagecache.cache._engine import Lookup, SemanticCache, StoreItem
from stagecache.cache._explain import ExplainedEntry, Explanation
from stagecache.cache._flight import Flight, SingleFlight
from stagecache.cache._index import FlatIndex, HnswIndex, ScopeIndex, build_index
from stagecache.cache._memory import MemoryBackend
from stagecache.cache._redis import RedisBackend
from stagecache.cache._scope import Scope, normalise_query, resolve_scope, scope_hash
from stagecache.cache._settings import (
    BackendSettings,
    CacheSettings,
    KeyParts,
    TtlPattern,
)
from stagecache.cache._sqlite import SqliteBackend

__all__ = [
    "Backend",
    "BackendSettings",
    "CacheSettings",
    "Change",
    "Entry",
    "ExplainedEntry",
    "Explanation",
    "FlatIndex",
    "Flight",
    "HnswIndex",
    "KeyParts",
    "Lookup",
    "MemoryBackend",
    "RedisBackend",
    "Scope",
    "ScopeIndex",
    "SemanticCache",
    "SingleFlight",
    "SqliteBackend",
    "StoreItem",
    "TtlPattern",
    "build_index",
    "make_backend",
    "normalise_query",
    "resolve_scope",
    "scope_hash",
]
