"""The three cache backends as one fixture, for the tenant and id tests.

``cache_settings`` is parametrized over memory, sqlite (a file in ``tmp_path``) and
redis (a namespace of its own on the shared server, deleted afterwards; skipped
when no server listens on 127.0.0.1:6379). Import the fixtures into a test module:
``from tenant_backends import anyio_backend, cache_settings``.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecache.cache import BackendSettings, CacheSettings

REDIS_URL = "redis://127.0.0.1:6379/0"
MakeSettings = Callable[..., CacheSettings]


def redis_listening() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.3).close()
        return True
    except OSError:
        return False


def drop_namespace(namespace: str) -> None:
    """Delete every key of ``namespace`` on the shared server."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def anyio_backend() -> str:
    # The redis backend runs on asyncio only; the other two are covered on trio
    # by tests/cache.
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def cache_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MakeSettings]:
    """``make(**options)`` -> CacheSettings on the backend of the parameter."""
    kind = str(request.param)
    namespace = f"sctenant-{uuid.uuid4().hex[:12]}"
    if kind == "redis" and not redis_listening():
        pytest.skip("no Redis on 127.0.0.1:6379")

    def make(**options: Any) -> CacheSettings:
        if kind == "sqlite":
            backend = BackendSettings(kind="sqlite", path=str(tmp_path / "cache.db"))
        elif kind == "redis":
            backend = BackendSettings(
                kind="redis", redis_url=REDIS_URL, redis_namespace=namespace
            )
        else:
            backend = BackendSettings()
        return CacheSettings(backend=backend, **options)

    make.kind = kind  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        if kind == "redis":
            drop_namespace(namespace)
