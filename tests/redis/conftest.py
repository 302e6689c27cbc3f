"""Fixtures of the redis backend tests: a real redis-server, unique namespaces.

Every test uses its own key namespace on the shared server (127.0.0.1:6379, or one
started for the session when nothing listens there) and deletes it afterwards.
Tests that kill Redis start a private server on a free port: the shared one is
never stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).parent
SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
DIM = 384


@pytest.fixture
def anyio_backend() -> str:
    # redis.asyncio runs on asyncio only (the backend refuses trio with a clear
    # CacheError, tested in test_redis_backend.py), so these tests skip trio.
    return "asyncio"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server (no persistence) that a test may kill and restart."""

    def __init__(self, port: int | None = None) -> None:
        if SERVER is None:
            pytest.skip("redis-server binary not found (apt install redis-server)")
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert SERVER is not None
        self.proc = subprocess.Popen(
            [SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared server, or a session server when none listens on 6379."""
    if _listening(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    if SERVER is None:
        pytest.skip("no Redis on 127.0.0.1:6379 and no redis-server binary to start")
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (to kill and restart)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _drop(url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.RedisError:
        pass
    finally:
        client.close()


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key namespace of this test alone, deleted afterwards."""
    ns = f"sctest-{uuid.uuid4().hex[:12]}"
    try:
        yield ns
    finally:
        _drop(redis_url, ns)


@pytest.fixture
def raw(redis_url: str) -> Iterator[object]:
    """A plain synchronous client, to look at what is really stored."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def unit(seed: int) -> np.ndarray:
    """A reproducible unit vector (the same seed in every process)."""
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def vec() -> Callable[[int], np.ndarray]:
    return unit
