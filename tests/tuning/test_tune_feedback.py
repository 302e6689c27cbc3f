"""The feedback log: a verdict given with the query that got the hit is kept (with
the entry's own query) by the memory and SQLite backends, survives a restart and
the entry's removal, is erased by a purge, and is sealed like the entries."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stagecache
from stagecache.errors import InputError
from stagecache.testing import ScriptedLLM
from tests.cli_support import default_chain, run_cli

pytestmark = pytest.mark.anyio

ALICE = stagecache.Caller(user_id="alice")
BOB = stagecache.Caller(user_id="bob", tenant="acme")
REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = base64.b64encode(bytes(range(32))).decode()

CHAIN = default_chain(cache_check=120)

ASKED = "How do I reset my password?"
HIT = "How can I reset my password?"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(tmp_path: Path, backend: str, extra: str = "") -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        "[cache]\nthreshold = 0.8\ntimeout_s = 60\n"
        f"[cache.backend]\n{backend}{extra}"
        '[verifier]\nkind = "none"\n' + CHAIN
    )
    return path


def sqlite(tmp_path: Path, extra: str = "") -> Path:
    return config(
        tmp_path, f'kind = "sqlite"\npath = "{tmp_path / "cache.db"}"\n', extra
    )


def raw_bytes(folder: Path) -> bytes:
    """Every byte of the SQLite file and its WAL."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("cache.db*")))


async def hit_then_feedback(
    pipe: stagecache.Pipeline, caller: stagecache.Caller, *, correct: bool
) -> str:
    """Store ASKED, hit it with HIT, give the verdict with the hit query."""
    stored = await pipe.run(ASKED, caller=caller)
    assert stored.cache.stored
    hit = await pipe.run(HIT, caller=caller)
    assert hit.cache.status == "hit", hit.cache
    assert hit.cache.entry_id is not None
    assert await pipe.cache.feedback(hit.cache.entry_id, correct=correct, query=HIT)
    return hit.cache.entry_id


async def test_sqlite_keeps_the_hit_query_and_the_entry_across_a_restart(
    embedder: Any, tmp_path: Path
) -> None:
    path = sqlite(tmp_path)
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        entry_id = await hit_then_feedback(pipe, ALICE, correct=False)
        # negative_feedback_limit = 1: the wrong entry is gone, its pair is not
        assert await pipe.cache.get(entry_id) is None
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        records = await pipe.cache.feedback_records()
    assert [(r.entry_id, r.hit_query, r.entry_query, r.correct) for r in records] == [
        (entry_id, HIT, ASKED, False)
    ]
    assert (records[0].user_id, records[0].tenant) == ("alice", None)


async def test_feedback_without_the_query_logs_nothing(
    embedder: Any, tmp_path: Path
) -> None:
    path = sqlite(tmp_path)
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        stored = await pipe.run(ASKED, caller=ALICE)
        assert stored.cache.entry_id is not None
        assert await pipe.cache.feedback(stored.cache.entry_id, correct=True)
        assert await pipe.cache.feedback_records() == []
        with pytest.raises(InputError, match="query: "):
            await pipe.cache.feedback(stored.cache.entry_id, correct=True, query=" ")


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_purge_erases_the_users_feedback(
    embedder: Any, tmp_path: Path, backend: str
) -> None:
    path = sqlite(tmp_path) if backend == "sqlite" else config(tmp_path, "")
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        await hit_then_feedback(pipe, ALICE, correct=True)
        await hit_then_feedback(pipe, BOB, correct=False)
        everyone = await pipe.cache.feedback_records()
        assert sorted((r.user_id, r.correct) for r in everyone) == [
            ("alice", True),
            ("bob", False),
        ]
        assert [r.user_id for r in await pipe.cache.feedback_records("bob")] == ["bob"]
        assert [r.tenant for r in await pipe.cache.feedback_records(tenant="acme")] == [
            "acme"
        ]
        await pipe.cache.purge_user(BOB.user_id, tenant="acme")
        assert [r.user_id for r in await pipe.cache.feedback_records()] == ["alice"]
        await pipe.cache.clear()
        assert await pipe.cache.feedback_records() == []
    if backend == "sqlite":
        raw = raw_bytes(tmp_path)
        assert HIT.encode() not in raw  # zeroed on delete (secure_delete), WAL too


async def test_an_encrypted_cache_seals_its_feedback_log(
    embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", KEY)
    path = sqlite(tmp_path, "encrypt_values = true\n")
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        await hit_then_feedback(pipe, ALICE, correct=False)
        records = await pipe.cache.feedback_records()
    assert [(r.hit_query, r.entry_query) for r in records] == [(HIT, ASKED)]
    raw = raw_bytes(tmp_path)
    assert HIT.encode() not in raw and ASKED.encode() not in raw


async def test_reencrypt_seals_a_plaintext_feedback_log(
    embedder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sqlite(tmp_path)
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        await hit_then_feedback(pipe, ALICE, correct=False)
    assert HIT.encode() in raw_bytes(tmp_path)
    sealed = sqlite(tmp_path, "encrypt_values = true\n")
    done = run_cli(
        "reencrypt", "--config", str(sealed), env={"STAGECACHE_CACHE_KEY": KEY}
    )
    assert done.returncode == 0, done.stderr
    assert HIT.encode() not in raw_bytes(tmp_path)
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", KEY)
    async with stagecache.load(sealed, llm=llm, embedder=embedder) as pipe:
        records = await pipe.cache.feedback_records()
    assert [(r.hit_query, r.entry_query, r.correct) for r in records] == [
        (HIT, ASKED, False)
    ]


async def test_the_cli_feedback_query_flag_logs_the_pair(
    embedder: Any, tmp_path: Path
) -> None:
    path = sqlite(tmp_path)
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        stored = await pipe.run(ASKED, caller=ALICE)
    assert stored.cache.entry_id is not None
    done = run_cli(
        "feedback", stored.cache.entry_id, "--wrong", "--query", HIT, "--config",
        str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        records = await pipe.cache.feedback_records()
    assert [(r.hit_query, r.entry_query, r.correct) for r in records] == [
        (HIT, ASKED, False)
    ]


@pytest.fixture
def redis_ns() -> Iterator[str]:
    """A fresh namespace on the shared Redis, removed afterwards."""
    import redis

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.3).close()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    ns = f"sctest-tune-{uuid.uuid4().hex[:10]}"
    yield ns
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{ns}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def redis_values(ns: str) -> bytes:
    """Every key and value of the namespace's feedback log, raw."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        out = b""
        for key in client.scan_iter(match=f"{ns}:fb*"):
            kind = client.type(key)
            if kind == b"hash":
                out += b"".join(k + v for k, v in client.hgetall(key).items())
            out += key
        return out
    finally:
        client.close()


def redis_config(tmp_path: Path, ns: str, extra: str = "") -> Path:
    return config(
        tmp_path,
        f'kind = "redis"\nredis_url = "{REDIS_URL}"\nredis_namespace = "{ns}"\n',
        extra,
    )


async def test_redis_keeps_purges_and_seals_the_log(
    embedder: Any, tmp_path: Path, redis_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = redis_config(tmp_path, redis_ns)
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        await hit_then_feedback(pipe, ALICE, correct=True)
        await hit_then_feedback(pipe, BOB, correct=False)
    async with stagecache.load(path, llm=llm, embedder=embedder) as pipe:
        got = await pipe.cache.feedback_records()
        assert sorted((r.user_id, r.tenant, r.hit_query, r.correct) for r in got) == [
            ("alice", None, HIT, True),
            ("bob", "acme", HIT, False),
        ]
        assert HIT.encode() in redis_values(redis_ns)  # plain: readable
        await pipe.cache.purge_user("bob", all_tenants=True)
        assert [r.user_id for r in await pipe.cache.feedback_records()] == ["alice"]
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", KEY)
    sealed = redis_config(tmp_path, redis_ns, "encrypt_values = true\n")
    done = run_cli(
        "reencrypt", "--config", str(sealed), env={"STAGECACHE_CACHE_KEY": KEY}
    )
    assert done.returncode == 0, done.stderr
    assert HIT.encode() not in redis_values(redis_ns)
    async with stagecache.load(sealed, llm=llm, embedder=embedder) as pipe:
        got = await pipe.cache.feedback_records()
        assert [(r.hit_query, r.entry_query) for r in got] == [(HIT, ASKED)]
        await hit_then_feedback(pipe, BOB, correct=False)  # written sealed
        assert len(await pipe.cache.feedback_records()) == 2
        assert HIT.encode() not in redis_values(redis_ns)
        await pipe.cache.clear()
        assert await pipe.cache.feedback_records() == []
    assert redis_values(redis_ns) == b""
