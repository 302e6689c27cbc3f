"""Stored rows carry a checksum (or a GCM tag) verified on every read.

Replays the checksum part of issue 13 finding 8: bit flips in a real SQLite file
served altered answers (3 of 40 trials) and a bytes answer crashed the output
guard. Now an altered row is a miss, is evicted, and is a ``cache.error``; it
never reaches the caller. The same holds for an entry altered inside Redis.
"""

from __future__ import annotations

import base64
import logging
import shutil
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import stagecache
from stagecache.cache import BackendSettings, CacheSettings
from stagecache.config import build
from stagecache.pipeline._events import CacheError as CacheErrorEvent
from stagecache.testing import ScriptedLLM, capture_events

pytestmark = pytest.mark.anyio

KEY = base64.b64encode(bytes(range(7, 39))).decode()
ALICE = stagecache.Caller(user_id="alice")
QUESTIONS = (
    "How many vacation days do I have left this year?",
    "What is the wifi password of the Berlin office?",
    "Who approves my travel expenses above 500 euros?",
    "When is the next all-hands meeting scheduled?",
    "How do I request a second monitor for my desk?",
    "Which health insurance plan covers dental care?",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def answer(prompt: str) -> str:
    return f"The verified answer, number {QUESTIONS.index(prompt)}, is on the wiki."


def sqlite_cache(path: Path, encrypt: bool = False) -> CacheSettings:
    return CacheSettings(
        backend=BackendSettings(kind="sqlite", path=str(path), encrypt_values=encrypt)
    )


def pipeline(embedder: Any, cache: CacheSettings) -> tuple[Any, ScriptedLLM]:
    llm = ScriptedLLM(answer)
    return build(llm=llm, embedder=embedder, cache=cache), llm


async def fill(embedder: Any, cache: CacheSettings) -> None:
    pipe, _ = pipeline(embedder, cache)
    async with pipe:
        for q in QUESTIONS:
            assert (await pipe.run(q, caller=ALICE)).cache.stored


def rows(db: Path) -> list[tuple[Any, ...]]:
    """(query, answer, sealed) of every row, in the order they were stored."""
    with closing(sqlite3.connect(db)) as conn, conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(entries)")}
        sealed = "sealed" if "sealed" in columns else "NULL"  # previous format
        found = conn.execute(
            f"SELECT query, answer, {sealed} FROM entries ORDER BY rowid"
        )
        return list(found.fetchall())


def flip(db: Path, needle: bytes, trial: int) -> None:
    data = bytearray(db.read_bytes())
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0
    offset = at + (trial * 7) % len(needle)
    data[offset] ^= 1 << (trial % 8)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
async def test_bit_flips_in_the_sqlite_file_never_serve_an_altered_answer(
    embedder: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    encrypt: bool,
) -> None:
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", KEY)
    pristine = tmp_path / "pristine" / "cache.db"
    pristine.parent.mkdir()
    try:
        await fill(embedder, sqlite_cache(pristine, encrypt))
    except stagecache.ConfigError:
        pytest.fail("this build cannot encrypt a sqlite cache")
    assert not pristine.with_name("cache.db-wal").exists()
    before = rows(pristine)
    assert [r[0] for r in before] == ([""] * 6 if encrypt else list(QUESTIONS))
    trials = 24
    for trial in range(trials):
        question = QUESTIONS[trial % len(QUESTIONS)]
        _, stored_answer, sealed = before[trial % len(QUESTIONS)]
        if encrypt:
            needle = bytes(sealed)
        elif trial % 2:
            needle = question.encode()
        else:
            needle = stored_answer.encode()
        db = tmp_path / f"trial{trial}" / "cache.db"
        db.parent.mkdir()
        shutil.copy(pristine, db)
        flip(db, needle, trial)
        pipe, llm = pipeline(embedder, sqlite_cache(db, encrypt))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stagecache.cache"):
            async with pipe:
                result = await pipe.run(question, caller=ALICE)
                again = await pipe.run(question, caller=ALICE)
        # Never an altered answer, never a crash: the model answers again.
        assert result.answer == answer(question), (trial, result.answer)
        assert not result.cache.hit and llm.calls == 1, trial
        assert again.cache.hit and again.answer == answer(question)
        # The altered row was evicted (at warm-up, which verifies every row),
        # logged, and replaced by the fresh answer.
        assert "failed their integrity check and were evicted" in caplog.text
        left = rows(db)
        assert len(left) == len(QUESTIONS)
        if encrypt:
            assert all(r[2] != sealed for r in left)
        else:
            assert [r[1] for r in left].count(answer(question)) == 1


async def test_a_bytes_answer_is_a_miss_not_a_crash(
    embedder: Any, tmp_path: Path
) -> None:
    db = tmp_path / "cache.db"
    await fill(embedder, sqlite_cache(db))
    # What a flipped serial-type byte does: the TEXT answer becomes a BLOB.
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE entries SET answer = CAST(answer AS BLOB)")
    pipe, llm = pipeline(embedder, sqlite_cache(db))
    async with pipe:
        for q in QUESTIONS:
            result = await pipe.run(q, caller=ALICE)
            assert result.answer == answer(q) and not result.cache.hit
    assert llm.calls == len(QUESTIONS)


async def test_a_previous_format_sqlite_file_gets_checksums_on_open(
    embedder: Any, tmp_path: Path
) -> None:
    db = tmp_path / "cache.db"
    await fill(embedder, sqlite_cache(db))
    # Make it a file of the previous format: no checksum/sealed, no mode.
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TABLE stagecache_meta")
        conn.execute("ALTER TABLE entries DROP COLUMN sealed")
        conn.execute("ALTER TABLE entries DROP COLUMN checksum")
    pipe, _ = pipeline(embedder, sqlite_cache(db))
    async with pipe:
        for q in QUESTIONS:
            assert (await pipe.run(q, caller=ALICE)).cache.hit
    with closing(sqlite3.connect(db)) as conn, conn:
        sums = conn.execute("SELECT checksum FROM entries").fetchall()
    assert len(sums) == len(QUESTIONS) and all(len(s[0]) == 16 for s in sums)
    flip(db, answer(QUESTIONS[0]).encode(), 3)
    pipe, _ = pipeline(embedder, sqlite_cache(db))
    async with pipe:
        result = await pipe.run(QUESTIONS[0], caller=ALICE)
    assert result.answer == answer(QUESTIONS[0]) and not result.cache.hit


# -- Redis ------------------------------------------------------------------------


@pytest.fixture
def redis_ns() -> Iterator[tuple[Any, str]]:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.3).close()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    ns = f"sctest-int-{uuid.uuid4().hex[:10]}"
    try:
        yield client, ns
    finally:
        keys = list(client.scan_iter(match=f"{ns}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.redis
@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
async def test_an_altered_redis_entry_is_evicted_not_served(
    embedder: Any,
    redis_ns: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    encrypt: bool,
) -> None:
    raw, ns = redis_ns
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", KEY)
    cache = CacheSettings(
        backend=BackendSettings(
            kind="redis", redis_namespace=ns, encrypt_values=encrypt
        )
    )
    pipe, llm = pipeline(embedder, cache)
    with capture_events(pipe.events) as cap:
        async with pipe:
            for q in QUESTIONS[:2]:
                await pipe.run(q, caller=ALICE)
            key = next(
                k
                for k in raw.scan_iter(match=f"{ns}:e:*")
                if encrypt or raw.hget(k, "q") == QUESTIONS[0].encode()
            )
            if encrypt:
                sealed = bytearray(raw.hget(key, "Z"))
                sealed[-20] ^= 0x04
                raw.hset(key, "Z", bytes(sealed))
                asked = list(QUESTIONS[:2])
            else:
                raw.hset(key, "a", "Send your password to evil@example.com")
                asked = [QUESTIONS[0]]
            for q in asked:
                result = await pipe.run(q, caller=ALICE)
                assert result.answer == answer(q), result.answer
    assert not raw.exists(key)
    assert [e.operation for e in cap.of(CacheErrorEvent)] == ["lookup"]  # type: ignore[attr-defined]
    assert llm.calls == 3
