"""The redis backend on its own: storage, TTLs, caps, encryption, errors, config."""

from __future__ import annotations

import base64
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
import pytest

from stagecache._model import Caller
from stagecache.cache import (
    BackendSettings,
    CacheSettings,
    Change,
    Entry,
    KeyParts,
    RedisBackend,
    SemanticCache,
    make_backend,
)
from stagecache.errors import BackendUnavailable, CacheError, ConfigError

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

PARTS = KeyParts("model", "instructions", "context")
KEY = base64.b64encode(bytes(range(32))).decode()


def entry(i: int, vec: Callable[[int], np.ndarray], **kw: Any) -> Entry:
    fields: dict[str, Any] = {
        "entry_id": f"{i:016x}",
        "scope_key": '["per_user",null,"alice",null]',
        "scope_mode": "per_user",
        "user_id": "alice",
        "query": f"secret question {i}",
        "answer": f"secret answer {i}",
        "parts": PARTS,
        "vector": vec(i).tobytes(),
        "metadata": {"label": f"meta {i}"},
        "created_at": 1000.0 + i,
        "expires_at": 5000.0 + i,
        "last_used": 1000.0 + i,
    }
    fields.update(kw)
    return Entry(**fields)


async def test_put_get_scan_round_trip(redis_url, namespace, vec, raw) -> None:
    backend = RedisBackend(redis_url, namespace=namespace)
    await backend.open()
    try:
        for i in range(5):
            await backend.put(entry(i, vec))
        await backend.put(entry(9, vec, user_id=None, scope_key="shared"))
        got = await backend.get_many([f"{i:016x}" for i in (0, 3, 7)])
        assert set(got) == {f"{0:016x}", f"{3:016x}"}
        assert got[f"{3:016x}"] == entry(3, vec)
        assert await backend.count() == 6
        everything = [e async for batch in backend.scan(batch=2) for e in batch]
        assert sorted(e.entry_id for e in everything) == sorted(
            [f"{i:016x}" for i in (0, 1, 2, 3, 4, 9)]
        )
        alice = [
            e
            async for batch in backend.scan('["per_user",null,"alice",null]')
            for e in batch
        ]
        assert len(alice) == 5
        # Native TTL: expires_at - last_used = 4000 s.
        ttl = raw.pttl(f"{namespace}:e:{0:016x}")
        assert 3_990_000 < ttl <= 4_000_000
    finally:
        await backend.aclose()


async def test_touch_adds_up_and_never_resurrects(redis_url, namespace, vec, raw):
    a = RedisBackend(redis_url, namespace=namespace)
    b = RedisBackend(redis_url, namespace=namespace)
    await a.open()
    await b.open()
    try:
        e = entry(1, vec)
        await a.put(e)
        eid = e.entry_id
        # Both workers read hits=0 and each records one hit: the sum is 2.
        for backend in (a, b):
            got = (await backend.get_many([eid]))[eid]
            assert got.hits == 0  # read before either hit is written
        for backend in (a, b):
            await backend.touch(eid, last_used=2000.0, hits=1, positive=1, negative=0)
            await backend.flush()
        stored = (await a.get_many([eid]))[eid]
        assert (stored.hits, stored.positive, stored.last_used) == (2, 2, 2000.0)
        assert raw.zscore(f"{namespace}:lru", eid) == 2000.0
        assert raw.zscore(f"{namespace}:u:alice", eid) == 2000.0
        await a.delete([eid])
        await b.touch(eid, last_used=3000.0, hits=5, positive=0, negative=0)
        await b.flush()
        assert not raw.exists(f"{namespace}:e:{eid}")
        assert raw.zscore(f"{namespace}:lru", eid) is None
    finally:
        await a.aclose()
        await b.aclose()


async def test_close_waits_for_the_touches_being_written(
    redis_url, namespace, vec, monkeypatch
) -> None:
    # A flush in flight when the worker closes (its hits already taken out of
    # the queue) must land, not be cancelled with the background task: the
    # Redis round trip is slowed so that close() always meets it mid-flight.
    backend = RedisBackend(redis_url, namespace=namespace)
    await backend.open()
    e = entry(1, vec)
    try:
        await backend.put(e)
        await backend.get_many([e.entry_id])
        in_flight = anyio.Event()
        real_do = backend._do

        async def slow_do(operation: str, call: Any) -> Any:
            if operation == "touch":
                in_flight.set()
                await anyio.sleep(0.3)
            return await real_do(operation, call)

        monkeypatch.setattr(backend, "_do", slow_do)
        await backend.touch(
            e.entry_id, last_used=2000.0, hits=3, positive=0, negative=0
        )
        with anyio.fail_after(5):
            await in_flight.wait()
    finally:
        await backend.aclose()
    reader = RedisBackend(redis_url, namespace=namespace)
    await reader.open()
    try:
        stored = (await reader.get_many([e.entry_id]))[e.entry_id]
        assert (stored.hits, stored.last_used) == (3, 2000.0)
    finally:
        await reader.aclose()


async def test_deletes_scopes_users_clear(redis_url, namespace, vec, raw) -> None:
    backend = RedisBackend(redis_url, namespace=namespace)
    await backend.open()
    try:
        for i in range(4):
            await backend.put(entry(i, vec))
        for i in range(4, 6):
            await backend.put(
                entry(i, vec, user_id="bob", scope_key='["per_user",null,"bob",null]')
            )
        assert await backend.delete([f"{0:016x}", "ffffffffffffffff"]) == 1
        assert await backend.delete_scope('["per_user",null,"bob",null]') == 2
        assert await backend.delete_user("alice") == 3
        assert await backend.count() == 0
        await backend.put(entry(7, vec))
        assert await backend.clear() == 1
        leftovers = [k for k in raw.scan_iter(match=f"{namespace}:*")]
        assert sorted(k.decode().split(":", 1)[1] for k in leftovers) == [
            "epoch",
            "log",
            "mode",  # the namespace's encryption mode outlives a clear
            "scrubbed",  # where the purge's stream scrub stopped
            "seq",
        ]
    finally:
        await backend.aclose()


async def test_caps_and_expiry_are_enforced_in_redis(redis_url, namespace, vec, raw):
    backend = RedisBackend(
        redis_url, namespace=namespace, max_entries_per_user=3, max_total_entries=4
    )
    changes: list[Change] = []
    await backend.open()
    backend.subscribe(changes.append)
    try:
        for i in range(5):
            await backend.put(entry(i, vec))
        assert raw.zcard(f"{namespace}:u:alice") == 3
        evicted = [i for c in changes if c.kind == "delete" for i in c.entry_ids]
        assert evicted == [f"{0:016x}", f"{1:016x}"]  # least recently used first
        await backend.put(entry(8, vec, user_id="bob", scope_key="b", last_used=900.0))
        assert await backend.count() == 4
        await backend.put(entry(9, vec, user_id="carol", scope_key="c"))
        assert await backend.count() == 4  # bob's entry was the oldest overall
        assert not raw.exists(f"{namespace}:e:{8:016x}")
        # An entry past its expires_at is reclaimed by the next write.
        await backend.put(
            entry(10, vec, user_id="dave", scope_key="d", last_used=5002.5)
        )
        assert not raw.exists(f"{namespace}:e:{2:016x}")  # expired at 5002
        assert raw.hlen(f"{namespace}:w") == raw.zcard(f"{namespace}:lru")
    finally:
        await backend.aclose()


async def test_encrypted_values_are_unreadable_in_redis(
    redis_url, namespace, vec, raw, monkeypatch
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", KEY)
    settings = CacheSettings(
        backend=BackendSettings(
            kind="redis",
            redis_url=redis_url,
            redis_namespace=namespace,
            encrypt_values=True,
        )
    )
    cache = SemanticCache(settings)
    assert isinstance(cache.backend, RedisBackend) and cache.backend.encrypted
    async with cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        eid = await cache.store(
            scope,
            "what is my account number?",
            vec(1),
            PARTS,
            "your account number is 12345678",
            metadata={"note": "very private"},
        )
        stored = raw.hgetall(f"{namespace}:e:{eid}")
        blob = b"".join(k + v for k, v in stored.items())
        for secret in (b"12345678", b"account number", b"very private"):
            assert secret not in blob
        assert b"Z" in stored and b"a" not in stored and b"q" not in stored
        assert b"v" not in stored  # the vector is sealed too
        found = await cache.lookup(scope, vec(1), PARTS, "what is my account number?")
        assert found.hit is not None
        assert found.hit.answer == "your account number is 12345678"
        assert found.hit.metadata == {"note": "very private"}
    # A worker with another key refuses to start (tests/security covers more).
    monkeypatch.setenv(
        "STAGECACHE_CACHE_KEY", base64.b64encode(os.urandom(32)).decode()
    )
    other = RedisBackend(redis_url, namespace=namespace, encrypt_values=True)
    with pytest.raises(ConfigError, match="another key"):
        await other.open()


def test_encryption_key_errors(monkeypatch, caplog) -> None:
    monkeypatch.delenv("STAGECACHE_CACHE_KEY", raising=False)
    with pytest.raises(ConfigError, match="STAGECACHE_CACHE_KEY") as info:
        RedisBackend(encrypt_values=True)
    assert info.value.field == "cache.backend.encrypt_values"
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", "not base64 !!")
    with pytest.raises(ConfigError, match="not valid base64"):
        RedisBackend(encrypt_values=True)
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="exactly 32"):
        RedisBackend(encrypt_values=True)
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", base64.urlsafe_b64encode(
        bytes(range(200, 232))).decode().rstrip("="))  # fmt: skip
    assert RedisBackend(encrypt_values=True).encrypted
    monkeypatch.delenv("STAGECACHE_CACHE_KEY")
    with caplog.at_level(logging.WARNING, logger="stagecache.cache"):
        assert RedisBackend(encrypt_values=True, ephemeral_key=True).encrypted
    assert "ephemeral key" in caplog.text


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"redis_url": "http://127.0.0.1:6379"}, "backend.redis_url", "Redis URL"),
        ({"redis_url": "redis://:6379/0"}, "backend.redis_url", "no host"),
        ({"redis_url": "redis://h:99999/0"}, "backend.redis_url", "not a valid"),
        ({"redis_url": "redis://h:6379/x"}, "backend.redis_url", "database"),
        ({"redis_namespace": "a b"}, "backend.redis_namespace", "spaces"),
        ({"redis_stream_maxlen": 5}, "backend.redis_stream_maxlen", ">= 100"),
        ({"redis_tls_ca_file": "ca.pem"}, "backend.redis_tls_ca_file", "rediss"),
        ({"redis_socket_timeout_s": 0}, "backend.redis_socket_timeout_s", "> 0"),
    ],
)
def test_bad_redis_settings_name_the_field(fields, field, text) -> None:
    settings = CacheSettings(backend=BackendSettings(kind="redis", **fields))
    with pytest.raises(ConfigError, match=text) as info:
        settings.check()
    assert info.value.field == f"cache.{field}"


def test_encrypt_values_needs_a_persistent_backend() -> None:
    with pytest.raises(ConfigError, match="sqlite and redis backends") as info:
        CacheSettings(backend=BackendSettings(encrypt_values=True)).check()
    assert info.value.field == "cache.backend.encrypt_values"


def test_settings_make_a_redis_backend(monkeypatch) -> None:
    monkeypatch.setenv("STAGECACHE_REDIS_PASSWORD", "from-env")
    settings = CacheSettings(
        timeout_s=0.8,
        max_entries_per_user=7,
        backend=BackendSettings(
            kind="redis",
            redis_url="rediss://worker@cache.internal:6380/2",
            redis_namespace="prod",
            redis_tls_ca_file="/etc/ssl/ca.pem",
        ),
    )
    settings.check()
    backend = make_backend(settings)
    assert isinstance(backend, RedisBackend)
    assert backend.namespace == "prod" and backend.stores_vectors
    assert backend._options["password"] == "from-env"
    assert backend._options["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert backend._options["socket_timeout"] == pytest.approx(0.4)
    assert backend._caps == (7, 100_000)


async def test_unreachable_redis_is_a_clear_error_without_password(vec, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = f"redis://admin:hunter2@127.0.0.1:{port}/0"
    backend = RedisBackend(url, namespace="x", socket_timeout_s=0.2)
    with caplog.at_level(logging.WARNING, logger="stagecache.cache"):
        await backend.open()  # a warning, not an error: the worker starts empty
    try:
        assert "unreachable" in caplog.text and "hunter2" not in caplog.text
        assert [e async for batch in backend.scan() for e in batch] == []
        with pytest.raises(BackendUnavailable) as info:
            await backend.get_many(["0000000000000001"])
        message = str(info.value)
        assert "hunter2" not in message and "admin:***@127.0.0.1" in message
        assert "redis-server running" in message
        with pytest.raises(BackendUnavailable):
            await backend.put(entry(1, vec))
    finally:
        await backend.aclose()


async def test_wrong_password_fails_at_open(redis_url, namespace) -> None:
    import redis.asyncio as aioredis

    admin = aioredis.Redis.from_url(redis_url)
    user = f"sc-{namespace}"
    try:
        await admin.acl_setuser(
            user, enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"]
        )
    except Exception as exc:  # pragma: no cover - a server without ACLs
        await admin.aclose()
        pytest.skip(f"cannot create an ACL user: {exc}")
    try:
        bad = RedisBackend(redis_url, namespace=namespace, username=user,
                           password="wrong")  # fmt: skip
        with pytest.raises(BackendUnavailable, match="refused the credentials"):
            await bad.open()
        good = RedisBackend(redis_url, namespace=namespace, username=user,
                            password="right")  # fmt: skip
        await good.open()
        assert await good.count() == 0
        await good.aclose()
    finally:
        await admin.acl_deluser(user)
        await admin.aclose()


def test_trio_is_refused_with_a_clear_error(redis_url) -> None:
    async def main() -> None:
        await RedisBackend(redis_url, namespace="unused").open()

    with pytest.raises(CacheError, match="needs asyncio"):
        anyio.run(main, backend="trio")
