"""Two engines on one namespace (two workers in one process): the change stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from stagecache._model import Caller
from stagecache.cache import CacheSettings, KeyParts, RedisBackend, SemanticCache
from stagecache.cache._redis_touch import stop_task
from stagecache.errors import BackendUnavailable

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

PARTS = KeyParts("model", "instructions", "context")
ALICE = Caller(user_id="alice")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0):
    """Poll ``check`` until it holds (a deadline, not a timing assertion)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def worker(url: str, namespace: str, **kw: object) -> SemanticCache:
    return SemanticCache(
        CacheSettings(), backend=RedisBackend(url, namespace=namespace, **kw)
    )


@pytest.fixture
async def pair(redis_url, namespace) -> AsyncIterator[tuple[SemanticCache, ...]]:
    a, b = worker(redis_url, namespace), worker(redis_url, namespace)
    async with a, b:
        yield a, b


async def hits(cache: SemanticCache, v, answer: str | None = None) -> bool:
    found = await cache.lookup(cache.scope_for(ALICE), v, PARTS, "q")
    if found.hit is None:
        return False
    return answer is None or found.hit.answer == answer


async def test_store_on_one_worker_is_a_hit_on_the_other(pair, vec) -> None:
    a, b = pair
    scope = a.scope_for(ALICE)
    eid = await a.store(scope, "what is the capital of France?", vec(1), PARTS, "Paris")
    await eventually(lambda: hits(b, vec(1), "Paris"))
    # A refresh of the same query on A changes the answer B serves.
    again = await a.store(
        scope, "what is the capital of France?", vec(1), PARTS, "Paris, France"
    )
    assert again == eid
    await eventually(lambda: hits(b, vec(1), "Paris, France"))
    assert b.stats()["entries"] == 1


async def test_invalidate_and_purge_reach_every_worker(pair, vec) -> None:
    a, b = pair
    scope = a.scope_for(ALICE)
    await a.store(scope, "q1", vec(1), PARTS, "one")
    await eventually(lambda: hits(b, vec(1)))
    assert await a.invalidate(scope) == 1
    # Redis is the authority on the hit path: B cannot serve it even before the
    # stream event arrives.
    assert not await hits(b, vec(1))
    await eventually(lambda: _entries(b, 0))
    await b.store(scope, "q2", vec(2), PARTS, "two")
    await eventually(lambda: hits(a, vec(2)))
    assert await b.purge_user("alice") == 1
    assert not await hits(a, vec(2))
    await eventually(lambda: _entries(a, 0))


async def _entries(cache: SemanticCache, n: int) -> bool:
    await cache.apply_changes()
    return cache.stats()["entries"] == n


async def test_a_gap_in_the_stream_triggers_a_rebuild(pair, vec, raw, namespace):
    a, b = pair
    scope = a.scope_for(ALICE)
    backend = b.backend
    assert isinstance(backend, RedisBackend) and backend._follower is not None
    await stop_task(backend._tasks[0], 5.0)  # this worker stops following
    await a.store(scope, "q1", vec(1), PARTS, "one")
    raw.xtrim(f"{namespace}:log", maxlen=0)  # B never sees that event
    await a.store(scope, "q2", vec(2), PARTS, "two")
    backend._tasks[0] = asyncio.create_task(backend._follower.run())
    await eventually(lambda: hits(b, vec(1), "one"))
    assert await hits(b, vec(2), "two")
    assert backend.resyncs == 1


async def test_workers_resync_after_redis_restarts(private_redis, namespace, vec):
    a = worker(private_redis.url, namespace, socket_timeout_s=0.3)
    b = worker(private_redis.url, namespace, socket_timeout_s=0.3)
    async with a, b:
        scope = a.scope_for(ALICE)
        await a.store(scope, "q1", vec(1), PARTS, "one")
        await eventually(lambda: hits(b, vec(1)))
        private_redis.kill()
        with pytest.raises(BackendUnavailable):
            await b.lookup(scope, vec(1), PARTS, "q1")
        with pytest.raises(BackendUnavailable):
            await a.store(scope, "q2", vec(2), PARTS, "two")
        private_redis.start()  # empty: every worker must notice and rebuild
        for cache in (a, b):
            backend = cache.backend
            assert isinstance(backend, RedisBackend)
            await eventually(lambda be=backend: _resynced(be))
            await eventually(lambda c=cache: _entries(c, 0))
        await a.store(scope, "q3", vec(3), PARTS, "three")
        await eventually(lambda: hits(b, vec(3), "three"))


async def _resynced(backend: RedisBackend) -> bool:
    return backend.resyncs >= 1


async def test_a_worker_started_while_redis_is_down_catches_up(
    private_redis, namespace, vec
) -> None:
    private_redis.kill()
    b = worker(private_redis.url, namespace, socket_timeout_s=0.3)
    async with b:  # starts empty, with a warning
        scope = b.scope_for(ALICE)
        assert not await hits(b, vec(1))
        private_redis.start()
        a = worker(private_redis.url, namespace)
        async with a:
            await a.store(scope, "q1", vec(1), PARTS, "one")
            await eventually(lambda: hits(b, vec(1), "one"))
