"""Encryption at rest holds: one key per namespace, no mixed modes, rotation, SQLite.

Replays issue 13 finding 6 on Redis and SQLite: a worker with another key, or
with encryption off, refuses to start instead of writing beside the others;
encrypting over plaintext is refused until ``stagecache reencrypt`` migrates it;
old keys are read during a rotation; SQLite seals questions, answers, metadata
and vectors.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest

import stagecache
from stagecache.cache import BackendSettings, CacheSettings
from stagecache.config import build
from stagecache.errors import ConfigError
from stagecache.testing import ScriptedLLM

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
CLI = Path("/work/main/.venv/bin/stagecache")
K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(100, 132))).decode()
ALICE = stagecache.Caller(user_id="alice")
QUESTIONS = (
    "What is the PIN of my corporate credit card?",
    "Where do I find my payslip for March?",
    "How do I book a parental leave day?",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio runs on asyncio only


def answer(prompt: str) -> str:
    return f"secret-answer-7731 to: {prompt}"


@pytest.fixture
def redis_url() -> str:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.3).close()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    import redis

    ns = f"sctest-enc-{uuid.uuid4().hex[:10]}"
    yield ns
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{ns}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def settings(kind: str, where: str, **backend: Any) -> CacheSettings:
    if kind == "redis":
        b = BackendSettings(
            kind="redis", redis_namespace=where, redis_url="redis://127.0.0.1:6379/0",
            **backend,
        )  # fmt: skip
    else:
        b = BackendSettings(kind="sqlite", path=where, **backend)
    return CacheSettings(backend=b)


def pipeline(embedder: Any, cache: CacheSettings) -> tuple[Any, ScriptedLLM]:
    llm = ScriptedLLM(answer)
    return build(llm=llm, embedder=embedder, cache=cache), llm


async def store_all(embedder: Any, cache: CacheSettings) -> None:
    pipe, llm = pipeline(embedder, cache)
    async with pipe:
        for q in QUESTIONS:
            result = await pipe.run(q, caller=ALICE)
            assert result.cache.stored
    assert llm.calls == len(QUESTIONS)


async def hits(embedder: Any, cache: CacheSettings) -> int:
    pipe, llm = pipeline(embedder, cache)
    async with pipe:
        for q in QUESTIONS:
            result = await pipe.run(q, caller=ALICE)
            assert result.answer == answer(q)
    return len(QUESTIONS) - llm.calls


def files_of(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("cache.db*")))


def hashes(raw: Any, ns: str) -> list[dict[bytes, bytes]]:
    return [raw.hgetall(k) for k in raw.scan_iter(match=f"{ns}:e:*")]


def reencrypt(tmp_path: Path, cache: CacheSettings, **env: str) -> str:
    b = cache.backend
    lines = ["[cache.backend]", f'kind = "{b.kind}"']
    if b.kind == "redis":
        lines += [f'redis_namespace = "{b.redis_namespace}"']
    else:
        lines += [f'path = "{b.path}"']
    lines += [f"encrypt_values = {str(b.encrypt_values).lower()}"]
    if b.encryption_old_keys:
        names = ", ".join(f'"{n}"' for n in b.encryption_old_keys)
        lines += [f"encryption_old_keys = [{names}]"]
    file = tmp_path / f"reencrypt-{uuid.uuid4().hex[:6]}.toml"
    file.write_text("\n".join(lines) + "\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith("STAGECACHE_")}
    full.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **env)
    done = subprocess.run(
        [str(CLI), "reencrypt", "--config", str(file)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- Redis ------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_worker_with_another_key_refuses_to_start(
    embedder: Any, namespace: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    cache = settings("redis", namespace, encrypt_values=True)
    await store_all(embedder, cache)
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K2)
    pipe, _ = pipeline(embedder, cache)
    with pytest.raises(ConfigError, match="another key") as info:
        async with pipe:
            await pipe.run(QUESTIONS[0], caller=ALICE)
    assert "stagecache reencrypt" in str(info.value)
    assert K1 not in str(info.value) and K2 not in str(info.value)
    stored = hashes(raw, namespace)
    assert len(stored) == len(QUESTIONS)
    # Every entry is still sealed under the first key (same key id).
    assert len({h[b"Z"][1:5] for h in stored}) == 1


@pytest.mark.redis
async def test_redis_plain_worker_refuses_an_encrypted_namespace(
    embedder: Any, namespace: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    await store_all(embedder, settings("redis", namespace, encrypt_values=True))
    pipe, _ = pipeline(embedder, settings("redis", namespace))
    with pytest.raises(ConfigError, match="encrypt_values is off"):
        async with pipe:
            await pipe.run("What is my salary?", caller=ALICE)
    assert all(b"q" not in h and b"a" not in h for h in hashes(raw, namespace))


@pytest.mark.redis
async def test_redis_encrypting_over_plaintext_is_refused_until_reencrypt(
    embedder: Any,
    namespace: str,
    raw: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    await store_all(embedder, settings("redis", namespace))
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    encrypted = settings("redis", namespace, encrypt_values=True)
    pipe, _ = pipeline(embedder, encrypted)
    with pytest.raises(ConfigError, match="plaintext") as info:
        async with pipe:
            await pipe.run(QUESTIONS[0], caller=ALICE)
    assert "stagecache reencrypt --config" in str(info.value)
    out = reencrypt(tmp_path, encrypted, STAGECACHE_CACHE_KEY=K1)
    assert "rewrote 3 entries" in out
    for h in hashes(raw, namespace):
        assert set(h).isdisjoint({b"q", b"a", b"m", b"v", b"k"}) and b"Z" in h
        assert b"secret-answer-7731" not in b"".join(h.values())
    assert await hits(embedder, encrypted) == len(QUESTIONS)
    with pytest.raises(ConfigError, match="encrypt_values is off"):
        async with pipeline(embedder, settings("redis", namespace))[0]:
            pass


@pytest.mark.redis
async def test_redis_key_rotation_reads_old_keys_then_reencrypts(
    embedder: Any,
    namespace: str,
    raw: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    await store_all(embedder, settings("redis", namespace, encrypt_values=True))
    old_id = hashes(raw, namespace)[0][b"Z"][1:5]
    # The new key is current, the old one is read: every entry is still a hit.
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K2)
    monkeypatch.setenv("SC_TEST_OLD_KEY", K1)
    rotating = settings(
        "redis", namespace, encrypt_values=True, encryption_old_keys=["SC_TEST_OLD_KEY"]
    )
    assert await hits(embedder, rotating) == len(QUESTIONS)
    out = reencrypt(tmp_path, rotating, STAGECACHE_CACHE_KEY=K2, SC_TEST_OLD_KEY=K1)
    assert "rewrote 3 entries" in out and "dropped 0" in out
    assert all(h[b"Z"][1:5] != old_id for h in hashes(raw, namespace))
    # After the rewrite the old key is no longer needed, and no longer accepted.
    assert await hits(embedder, settings("redis", namespace, encrypt_values=True)) == 3
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    with pytest.raises(ConfigError, match="another key"):
        async with pipeline(
            embedder, settings("redis", namespace, encrypt_values=True)
        )[0]:
            pass


@pytest.mark.redis
async def test_redis_namespace_of_the_previous_format_is_upgraded_or_refused(
    embedder: Any, namespace: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    # Entries sealed the way stagecache sealed them before format 2 (z = nonce ||
    # AES-GCM(query, answer, metadata), vector plain), and no recorded mode.
    await store_all(embedder, settings("redis", namespace))
    aead = AESGCM(base64.b64decode(K1))
    for key in raw.scan_iter(match=f"{namespace}:e:*"):
        h = raw.hgetall(key)
        aad = f"{key.decode().rsplit(':', 1)[1]}\x00{h[b'sk'].decode()}".encode()
        values = (h[b"q"].decode(), h[b"a"].decode(), json.loads(h[b"m"]))
        nonce = os.urandom(12)
        sealed = nonce + aead.encrypt(nonce, msgspec.msgpack.encode(values), aad)
        raw.hdel(key, "q", "a", "m", "k")
        raw.hset(key, "z", sealed)
    raw.delete(f"{namespace}:mode")
    encrypted = settings("redis", namespace, encrypt_values=True)
    # The replay: a worker with another key used to start with one warning.
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K2)
    with pytest.raises(ConfigError, match="do not open with this worker's keys"):
        async with pipeline(embedder, encrypted)[0]:
            pass
    with pytest.raises(ConfigError, match="encrypt_values is off"):
        async with pipeline(embedder, settings("redis", namespace))[0]:
            pass
    # The right key upgrades it in place: sealed with the vector, and served.
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    assert await hits(embedder, encrypted) == len(QUESTIONS)
    for h in hashes(raw, namespace):
        assert b"Z" in h and not {b"z", b"v", b"q"} & set(h)


def start_server(server: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.redis
async def test_redis_worker_started_offline_checks_the_key_before_writing(
    embedder: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server binary")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"

    def cache() -> CacheSettings:
        return CacheSettings(
            backend=BackendSettings(
                kind="redis", redis_url=url, redis_namespace="ns", encrypt_values=True
            )
        )

    # Worker B starts with K2 while Redis is down (a warning, not an error).
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K2)
    late, _ = pipeline(embedder, cache())
    async with late:
        proc = start_server(server, port)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    await anyio.sleep(0.05)
            # Worker A with K1 writes first; B then refuses every cache operation.
            monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
            await store_all(embedder, cache())
            for q in QUESTIONS:
                result = await late.run(q + " (again)", caller=ALICE)
                assert result.answer == answer(q + " (again)")
                assert not result.cache.stored  # the store is refused
                assert "another key" in " ".join(result.errors)
            import redis

            client = redis.Redis.from_url(url)
            rows = [client.hgetall(k) for k in client.scan_iter(match="ns:e:*")]
            client.close()
            assert len(rows) == len(QUESTIONS)  # nothing written under K2
            assert len({r[b"Z"][1:5] for r in rows}) == 1
        finally:
            proc.kill()
            proc.wait()


# -- SQLite -----------------------------------------------------------------------


async def test_sqlite_seals_questions_answers_metadata_and_vectors(
    embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    db = tmp_path / "cache.db"
    cache = settings("sqlite", str(db), encrypt_values=True)
    await store_all(embedder, cache)
    blob = files_of(tmp_path)
    assert b"secret-answer-7731" not in blob
    for q in QUESTIONS:
        assert q.encode() not in blob
        vector = np.asarray(await embedder.embed([q]), dtype=np.float32)[0]
        assert vector.tobytes()[:64] not in blob
    assert await hits(embedder, cache) == len(QUESTIONS)


async def test_sqlite_refuses_another_key_and_encryption_off(
    embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    db = str(tmp_path / "cache.db")
    await store_all(embedder, settings("sqlite", db, encrypt_values=True))
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K2)
    with pytest.raises(ConfigError, match="another key"):
        async with pipeline(embedder, settings("sqlite", db, encrypt_values=True))[0]:
            pass
    with pytest.raises(ConfigError, match="encrypt_values is off"):
        async with pipeline(embedder, settings("sqlite", db))[0]:
            pass
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 3


async def test_sqlite_plaintext_file_is_encrypted_by_reencrypt(
    embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "cache.db"
    await store_all(embedder, settings("sqlite", str(db)))
    assert b"secret-answer-7731" in db.read_bytes()
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", K1)
    encrypted = settings("sqlite", str(db), encrypt_values=True)
    with pytest.raises(ConfigError, match="stagecache reencrypt"):
        async with pipeline(embedder, encrypted)[0]:
            pass
    assert "rewrote 3 entries" in reencrypt(
        tmp_path, encrypted, STAGECACHE_CACHE_KEY=K1
    )
    blob = files_of(tmp_path)
    assert b"secret-answer-7731" not in blob  # no plaintext left in free pages
    assert await hits(embedder, encrypted) == len(QUESTIONS)


def test_old_keys_are_variable_names_never_keys() -> None:
    with pytest.raises(ConfigError, match="keys never go in the config") as info:
        settings("sqlite", "x.db", encryption_old_keys=[K1]).check()
    assert info.value.field == "cache.backend.encryption_old_keys"
    settings("sqlite", "x.db", encryption_old_keys=["OLD_CACHE_KEY"]).check()
