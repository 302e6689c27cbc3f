"""``stagecache serve --workers N``: several worker processes over one backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import FakeUpstream, ServerThread

STAGECACHE = Path(sys.executable).with_name("stagecache")
ROOT = Path(__file__).parents[2]
KEY = "sk-workers"
ZERO = ["--workers", "0"]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    env.pop("STAGECACHE_IDENTITY_SECRET", None)  # the parent must make one
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    fake = FakeUpstream(keys=frozenset({KEY}))
    with ServerThread(fake.app) as server:
        yield server.url


@pytest.mark.parametrize("config", [None, '[verifier]\nkind = "structural"\n'])
def test_several_workers_over_the_memory_backend_is_a_usage_error(
    config: str | None, tmp_path: Path
) -> None:
    command = [str(STAGECACHE), "serve", "--upstream", "http://127.0.0.1:9/v1"]
    if config is not None:
        (tmp_path / "p.toml").write_text(config)
        command += ["--config", str(tmp_path / "p.toml")]
    done = subprocess.run(
        [*command, "--workers", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "--workers" in done.stderr and "memory backend" in done.stderr
    assert "Traceback" not in done.stderr


def test_workers_zero_is_a_usage_error() -> None:
    done = subprocess.run(
        [str(STAGECACHE), "serve", "--upstream", "http://127.0.0.1:9/v1", *ZERO],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--workers" in done.stderr


def _redis_keys(namespace: str) -> list[bytes]:
    import redis

    client = redis.Redis()
    try:
        return list(client.scan_iter(f"{namespace}:*"))
    finally:
        client.close()


@pytest.mark.slow  # a parent and two worker processes, each loading the model
def test_two_workers_over_redis_answer_each_others_entries(
    upstream: str, tmp_path: Path
) -> None:
    namespace = f"test-workers-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[verifier]\nkind = "structural"\n[cache]\ntimeout_s = 30.0\n'
        '[cache.backend]\nkind = "redis"\n'
        f'redis_url = "redis://127.0.0.1:6379/0"\nredis_namespace = "{namespace}"\n'
    )
    port = _free_port()
    command = [str(STAGECACHE), "serve", "--upstream", upstream + "/v1"]
    command += ["--port", str(port), "--config", str(config), "--workers", "2"]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(command, env=_env(), stdout=sink, stderr=sink)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        healthy: set[int] = set()
        while len(healthy) < 1:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    healthy.add(1)
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        time.sleep(3)  # both workers: the second may still be loading its model
        headers = {"authorization": f"Bearer {KEY}", "x-stagecache-user": "w-user"}
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "How do I rotate my API key?"}],
        }

        def ask() -> str:
            # A new connection each time: the kernel spreads them over the workers.
            with httpx.Client(timeout=60) as client:
                reply = client.post(
                    base + "/v1/chat/completions", json=body, headers=headers
                )
            assert reply.status_code == 200, reply.text
            return reply.headers["x-stagecache"]

        assert ask() == "miss"
        time.sleep(1)  # the change event reaches the other worker
        outcomes = [ask() for _ in range(12)]
        # Every repeat is a hit whichever worker answers it: the entry is shared
        # through Redis, and both workers key the credential hash with the one
        # secret the parent generated.
        assert outcomes == ["hit"] * 12, outcomes
        workers = subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) >= 2, workers
    finally:
        server.terminate()
        server.wait(timeout=60)
        import redis

        client = redis.Redis()
        try:
            for key in _redis_keys(namespace):
                client.delete(key)
        finally:
            client.close()


def _nodelay_of_accepted(listener: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted by asyncio on ``listener`` rebuilt as
    a worker process rebuilds it (multiprocessing keeps family, type, proto)."""
    import asyncio

    rebuilt = socket.socket(
        listener.family, listener.type, listener.proto, fileno=os.dup(listener.fileno())
    )
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.Event()

        async def on_connect(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            accepted.set()
            writer.close()

        server = await asyncio.start_server(on_connect, sock=rebuilt)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            await asyncio.wait_for(accepted.wait(), 30)
            writer.close()

    asyncio.run(main())
    return seen[0]


def test_the_workers_connections_are_sent_without_nagle_delay() -> None:
    # A worker's accepted connection must have TCP_NODELAY: without it each
    # response's second write waits for the client's delayed ACK.
    from stagecache.integrations._proxy_workers import listening_socket

    listener = listening_socket("127.0.0.1", 0)
    try:
        assert _nodelay_of_accepted(listener) != 0
    finally:
        listener.close()


def test_a_busy_port_is_a_usage_error(upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[cache.backend]\nkind = "sqlite"\npath = "c.db"\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [str(STAGECACHE), "serve", "--upstream", upstream + "/v1"]
        command += ["--port", str(port), "--config", str(config), "--workers", "2"]
        done = subprocess.run(
            command,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert done.returncode == 2, done.stderr
    assert "cannot listen on" in done.stderr and "Traceback" not in done.stderr
