"""Sliding TTL (issue 17, finding 6): a hit extends an entry's life, up to a cap.

On the memory, SQLite and Redis backends, with the injected clock: the entry is
stored with a 60 s TTL; hits at +50 s and +100 s keep it alive past its first
expiry; ``max_lifetime_s = 150`` ends it whatever the hits. A fresh engine on the
same SQLite file or Redis namespace sees the slid expiry (the row is rewritten
whole, its checksum too, so it reads back verified).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecache._model import Caller
from stagecache.cache import (
    BackendSettings,
    CacheSettings,
    Entry,
    KeyParts,
    SemanticCache,
    SqliteBackend,
)
from stagecache.cache._scope import Scope
from stagecache.errors import BackendUnavailable, ConfigError

PARTS = KeyParts("gpt-x", "instr-1", "ctx-1")
Q = "How do I reset my password?"
PARA = "How can I reset my password?"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Redis client is asyncio's


def _redis_up() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 6379)) == 0


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[BackendSettings]:
    kind = request.param
    if kind == "memory":
        yield BackendSettings()
    elif kind == "sqlite":
        yield BackendSettings(kind="sqlite", path=str(tmp_path / "c.db"))
    else:
        if not _redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        from tests.redis.conftest import _drop

        ns = f"sctest-{uuid.uuid4().hex[:12]}"
        try:
            yield BackendSettings(kind="redis", redis_url=REDIS_URL, redis_namespace=ns)
        finally:
            _drop(REDIS_URL, ns)


def _scope(cache: SemanticCache) -> Scope:
    scope = cache.scope_for(Caller(user_id="alice"))
    assert isinstance(scope, Scope)
    return scope


def _settings(backend: BackendSettings, sliding: bool = True) -> CacheSettings:
    settings = CacheSettings(
        threshold=0.85,
        default_ttl=60,
        sliding_ttl=sliding,
        max_lifetime_s=150,
        backend=backend,
    )
    settings.check()
    return settings


async def _hits(cache: SemanticCache, clock: Any, at: float) -> bool:
    clock.now = at
    scope = _scope(cache)
    return (await cache.lookup(scope, EMBED[PARA], PARTS, PARA)).hit is not None


EMBED: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _vectors(embed: Any) -> None:
    EMBED.update({Q: embed(Q), PARA: embed(PARA)})


@pytest.mark.anyio
async def test_hits_extend_life_up_to_the_max_lifetime(
    backend: BackendSettings, clock: Any
) -> None:
    t0 = clock.now
    async with SemanticCache(_settings(backend), clock=clock) as cache:
        eid = await cache.store(_scope(cache), Q, EMBED[Q], PARTS, "reset link")
        assert eid is not None
        assert await _hits(cache, clock, t0 + 50)  # slides to t0 + 110
        assert await _hits(cache, clock, t0 + 100)  # past the stored expiry
        row = (await cache.backend.get_many([eid]))[eid]  # verified read
        assert row.expires_at == t0 + 150  # now + 60, capped at created + 150
        assert row.hits == 2
        if backend.kind == "memory":
            assert await _hits(cache, clock, t0 + 149)
            assert not await _hits(cache, clock, t0 + 151)  # the max lifetime
    if backend.kind != "memory":  # a fresh engine reads the slid expiry back
        clock.now = t0 + 149
        async with SemanticCache(_settings(backend), clock=clock) as cache:
            assert await _hits(cache, clock, t0 + 149)
            assert not await _hits(cache, clock, t0 + 151)  # the max lifetime


@pytest.mark.anyio
async def test_without_sliding_a_hit_does_not_extend(
    backend: BackendSettings, clock: Any
) -> None:
    t0 = clock.now
    async with SemanticCache(_settings(backend, sliding=False), clock=clock) as c:
        await c.store(_scope(c), Q, EMBED[Q], PARTS, "reset link")
        assert await _hits(c, clock, t0 + 50)
        assert not await _hits(c, clock, t0 + 61)


def test_max_lifetime_is_validated() -> None:
    with pytest.raises(ConfigError) as bad:
        CacheSettings(sliding_ttl=True, default_ttl=60, max_lifetime_s=30).check()
    assert bad.value.field == "cache.max_lifetime_s"
    with pytest.raises(ConfigError) as bad:
        CacheSettings(sliding_ttl=True, max_lifetime_s=-1).check()
    assert bad.value.field == "cache.max_lifetime_s"


class FullDisk(SqliteBackend):
    """A SQLite backend whose disk fills up on demand (an injected fault)."""

    full = False

    async def put(self, entry: Entry) -> None:
        if self.full:
            raise BackendUnavailable("database or disk is full")
        await super().put(entry)


@pytest.mark.anyio
async def test_a_failed_slide_still_serves_the_hit(tmp_path: Path, clock: Any) -> None:
    disk = FullDisk(tmp_path / "c.db")
    settings = _settings(BackendSettings(kind="sqlite", path=str(disk.path)))
    t0 = clock.now
    async with SemanticCache(settings, backend=disk, clock=clock) as cache:
        eid = await cache.store(_scope(cache), Q, EMBED[Q], PARTS, "reset link")
        disk.full = True
        clock.now = t0 + 50
        found = await cache.lookup(_scope(cache), EMBED[PARA], PARTS, PARA)
        assert found.hit is not None and found.hit.entry_id == eid
        assert found.touch_error is not None and "disk is full" in found.touch_error
        disk.full = False
        # Nothing slid: the stored expiry still holds.
        assert not await _hits(cache, clock, t0 + 61)
