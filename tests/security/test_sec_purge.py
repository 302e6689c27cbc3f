"""Erasure to the byte: after ``purge_user`` nothing of the user is left on disk.

Every test first makes SQLite behave as upstream builds do (``secure_delete=0``;
this machine's build defaults to 1, which would hide leaks), then scans the raw
bytes of every file the cache writes (``cache.db`` and its WAL, ``emb.db`` and its
WAL, saved and cold index files) and, for Redis, every key of the test namespace
(key names, values, stream records) for the user's id, questions, answers,
remembered facts, embedding-cache keys and vector bytes: once right after
``purge_user`` returned, while the process still runs, and again after close.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

import stagecache
from stagecache.cache import BackendSettings, CacheSettings, SqliteBackend
from stagecache.config import build
from stagecache.embeddings import CachedEmbedder
from stagecache.stages._keys import user_source
from stagecache.testing import ScriptedLLM

pytestmark = pytest.mark.anyio

USER = "erin-purge-5d1c7b"
OTHER = "frank-keeps-8e2a4d"
QUESTIONS = [
    "What is the warranty of the qmk1xjv blender?",
    "How long does shipping to qmk2wpz take?",
    "Can I pay the qmk3tyr invoice by card?",
]
IMPORTED = [
    ("Where is the qmk4hbn store located?", "amk4hbn: on the main square"),
    ("Which sizes does the qmk5lcd jacket come in?", "amk5lcd: small to large"),
    # Long enough for SQLite overflow pages.
    ("What does the qmk0lng manual say?", "amk0lng: " + "step " * 3000 + "amk0end"),
]
FACTS = ["fmk6rqe: the user owns a vintage camera", "fmk7gvo: the user lives on a boat"]
OTHER_QUESTIONS = [
    "Does the qmk8zzo kettle have a timer?",
    "Is the qmk6yyo toaster dishwasher safe?",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the Redis backend runs on asyncio only; sqlite is the same


def answer(prompt: str) -> str:
    marker = next((w for w in prompt.split() if w.startswith("qmk")), "none")
    return f"a{marker[1:]}-reply: see the manual"


@pytest.fixture
def upstream_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new SQLite connection starts with upstream's ``secure_delete=0``."""
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.execute("PRAGMA secure_delete=0")
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 0
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)


def checkpoint(path: Path) -> None:
    """Copy the WAL into the database file (another connection, as a tool would)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def vector_marks(vectors: Any) -> list[bytes]:
    """The first 32 bytes of each float32 vector, as stored on disk."""
    rows = np.asarray(vectors, dtype="<f4").reshape(len(vectors), -1)
    return [row.tobytes()[:32] for row in rows]


def text_marks(user_id: str, texts: list[str], answers: list[str]) -> list[bytes]:
    marks = [user_id.encode(), user_source(user_id).encode()]
    for text in texts + answers:
        marks.extend(w.encode() for w in text.split() if w[:3] in ("qmk", "amk", "fmk"))
    return marks


def user_answers(texts: list[str]) -> list[str]:
    return [answer(t) for t in texts]


def leaks(data: bytes, marks: list[bytes]) -> list[bytes]:
    return [m for m in marks if m in data]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def found_in(files: dict[str, bytes], marks: list[bytes]) -> dict[str, list[bytes]]:
    out = {name: leaks(data, marks) for name, data in files.items()}
    return {name: found for name, found in out.items() if found}


async def user_marks(pipeline: Any, cached: CachedEmbedder | None) -> list[bytes]:
    """Everything of USER that must vanish: text markers, emb keys, vector bytes."""
    questions = QUESTIONS + [q for q, _ in IMPORTED]
    answers = user_answers(QUESTIONS) + [a for _, a in IMPORTED]
    marks = text_marks(USER, questions + FACTS, answers)
    engine = pipeline.cache.engine
    mine = [e async for b in engine.backend.scan() for e in b if e.user_id == USER]
    assert len(mine) == len(QUESTIONS) + len(IMPORTED)
    marks += [e.vector[:32] for e in mine]
    if cached is not None:
        texts = questions + FACTS
        marks += [cached.key(t).encode() for t in texts]
        marks += vector_marks(await cached.embed(texts))  # hits: no new rows
    return marks


async def fill(pipeline: Any) -> None:
    user = stagecache.Caller(user_id=USER)
    assert await pipeline.cache.remember(USER, FACTS) == len(FACTS)
    for q in QUESTIONS:
        result = await pipeline.run(q, caller=user)
        assert not result.cache.hit and not result.errors, result
    summary = await pipeline.cache.import_pairs(IMPORTED, caller=user)
    assert summary.stored == len(IMPORTED), summary
    for q in OTHER_QUESTIONS:
        await pipeline.run(q, caller=stagecache.Caller(user_id=OTHER))


# -- SQLite: cache.db, emb.db, their WALs, saved and cold index files ----------------


@pytest.mark.parametrize("scope", ["per_user", "shared"])
async def test_purge_leaves_no_byte_of_the_user_in_any_sqlite_or_index_file(
    tmp_path: Path, embedder: Any, upstream_sqlite: None, scope: str
) -> None:
    data = tmp_path / "data"
    settings = CacheSettings(
        timeout_s=10.0,  # a loaded CI machine: no stage timeout
        scope=scope,  # type: ignore[arg-type]
        shared_data_acknowledged=True,
        backend=BackendSettings(kind="sqlite", path=str(data / "cache.db")),
        index_dir=str(data / "indexes"),
        flat_max_entries=1,  # hnswlib graphs from the second entry: files on disk
        max_hot_scopes=1,  # per_user: the user's scope goes cold (saved) for OTHER
    )
    cached = CachedEmbedder(embedder, path=data / "emb.db")
    pipeline = build(llm=ScriptedLLM(answer), embedder=cached, cache=settings)
    async with pipeline:
        await fill(pipeline)
        marks = await user_marks(pipeline, cached)
        for name in ("cache.db", "emb.db"):  # rows in the files too, not only WALs
            checkpoint(data / name)
        before = found_in(folder_bytes(data), marks)
        assert {"cache.db", "emb.db"} <= set(before), before.keys()
        if scope == "per_user":
            assert any(n.endswith(".hnsw") for n in before), "a cold, saved scope"
        assert await pipeline.cache.purge_user(USER) == len(QUESTIONS) + len(IMPORTED)
        running = found_in(folder_bytes(data), marks)
        assert not running, f"left while running: {running}"
        other = answer(OTHER_QUESTIONS[0]).split()[0].encode()
        assert any(other in b for b in folder_bytes(data).values())
    closed = found_in(folder_bytes(data), marks)
    assert not closed, f"left after close: {closed}"


async def test_purge_deletes_saved_index_files_no_entry_points_to_any_more(
    tmp_path: Path, embedder: Any
) -> None:
    # The user's scope was saved at close; its rows then went away while this
    # worker was down (a purge by another process, or every entry expired), so
    # the next start adopts nothing from the files and they stay behind.
    data = tmp_path / "data"
    settings = CacheSettings(
        timeout_s=10.0,  # a loaded CI machine: no stage timeout
        backend=BackendSettings(kind="sqlite", path=str(data / "cache.db")),
        index_dir=str(data / "indexes"),
        flat_max_entries=1,
    )
    pipeline = build(llm=ScriptedLLM(answer), embedder=embedder, cache=settings)
    async with pipeline:
        for q in QUESTIONS:
            await pipeline.run(q, caller=stagecache.Caller(user_id=USER))
        engine = pipeline.cache.engine
        marks = [e.vector[:32] async for b in engine.backend.scan() for e in b]
    marks.append(USER.encode())
    assert found_in(folder_bytes(data / "indexes"), marks)
    other = SqliteBackend(data / "cache.db")
    await other.open()
    assert await other.delete_user(USER) == len(QUESTIONS)
    await other.aclose()
    pipeline = build(llm=ScriptedLLM(answer), embedder=embedder, cache=settings)
    async with pipeline:
        await pipeline.cache.purge_user(USER)
        left = found_in(folder_bytes(data / "indexes"), marks)
        assert not left, f"saved files left: {list(left)}"


async def test_purge_removes_the_embedding_rows_of_facts_and_imported_questions(
    tmp_path: Path, embedder: Any
) -> None:
    cached = CachedEmbedder(embedder, path=tmp_path / "emb.db")
    pipeline = build(llm=ScriptedLLM(answer), embedder=cached)
    texts = FACTS + [q for q, _ in IMPORTED]
    async with pipeline:
        user = stagecache.Caller(user_id=USER)
        await pipeline.cache.remember(USER, FACTS)
        await pipeline.cache.import_pairs(IMPORTED, caller=user)
        await pipeline.cache.purge_user(USER)
        misses = cached.stats.misses
        await cached.embed(texts)  # every row gone: memory and disk
        assert cached.stats.misses == misses + len(texts)


async def test_sqlite_connections_turn_secure_delete_on(
    tmp_path: Path, embedder: Any, upstream_sqlite: None
) -> None:
    backend = SqliteBackend(tmp_path / "cache.db")
    await backend.open()
    try:
        assert await backend._run(
            "pragma", lambda c: c.execute("PRAGMA secure_delete").fetchone()[0]
        )
    finally:
        await backend.aclose()
    cached = CachedEmbedder(embedder, path=tmp_path / "emb.db")
    await cached.warm_up()
    try:
        store = cached._store
        assert store is not None
        assert store._run(
            "pragma", lambda c: c.execute("PRAGMA secure_delete").fetchone()[0]
        )
    finally:
        await cached.aclose()


# -- Redis: key names, values and the change stream of the namespace -----------------


@pytest.fixture
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    finally:
        client.close()
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(raw: Any) -> Iterator[str]:
    ns = f"sctest-purge-{uuid.uuid4().hex[:12]}"
    try:
        yield ns
    finally:
        keys = list(raw.scan_iter(match=f"{ns}:*", count=1000))
        if keys:
            raw.delete(*keys)


def keyspace_bytes(raw: Any, namespace: str, *, dump_streams: bool = True) -> bytes:
    """Every key name of the namespace and everything it holds, as bytes.

    With ``dump_streams=False`` a stream contributes what can be read of it
    (``XRANGE``) but not its ``DUMP``: Redis keeps the bytes of ``XDEL``-ed
    records inside the stream's node until trimming drops it (docs/security.md),
    and the ``DUMP`` is LZF-compressed, so a name in it may or may not show as
    plain bytes from one run to the next.
    """
    out: list[bytes] = []
    for key in raw.scan_iter(match=f"{namespace}:*", count=1000):
        out.append(key)
        kind = raw.type(key)
        if kind == b"hash":
            for field, value in raw.hgetall(key).items():
                out += [field, value]
        elif kind == b"set":
            out += list(raw.smembers(key))
        elif kind == b"zset":
            out += list(raw.zrange(key, 0, -1))
        elif kind == b"string":
            out.append(raw.get(key))
        elif kind == b"stream":
            for message_id, fields in raw.xrange(key):
                out.append(message_id)
                for field, value in fields.items():
                    out += [field, value]
        dump = raw.dump(key) if dump_streams or kind != b"stream" else None
        if dump is not None:
            out.append(dump)
    return b"\n".join(out)


def redis_settings(redis_url: str, namespace: str) -> CacheSettings:
    return CacheSettings(
        timeout_s=10.0,  # a loaded CI machine: no stage timeout
        backend=BackendSettings(
            kind="redis",
            redis_url=redis_url,
            redis_namespace=namespace,
            redis_socket_timeout_s=5.0,  # a loaded CI machine: no spurious timeout
        ),
    )


async def test_purge_leaves_no_trace_in_the_redis_keyspace_nor_its_stream(
    redis_url: str, namespace: str, raw: Any, embedder: Any
) -> None:
    pipeline = build(
        llm=ScriptedLLM(answer),
        embedder=embedder,
        cache=redis_settings(redis_url, namespace),
    )
    user = stagecache.Caller(user_id=USER)
    async with pipeline:
        await pipeline.run("What is the qmk9abc return policy?", caller=user)
        # An invalidation of the user's scope publishes an event on the stream.
        assert await pipeline.cache.invalidate(user) == 1
        await fill(pipeline)
        marks = await user_marks(pipeline, None)
        marks += text_marks(USER, ["qmk9abc"], [])
        assert leaks(keyspace_bytes(raw, namespace), marks)
        assert await pipeline.cache.purge_user(USER) == len(QUESTIONS) + len(IMPORTED)
        running = leaks(keyspace_bytes(raw, namespace), marks)
        assert not running, f"left while running: {running}"
    closed = keyspace_bytes(raw, namespace)
    assert not leaks(closed, marks), leaks(closed, marks)
    assert answer(OTHER_QUESTIONS[0]).split()[0].encode() in closed


async def test_purge_leaves_no_vector_in_another_workers_saved_index(
    redis_url: str, namespace: str, tmp_path: Path, embedder: Any
) -> None:
    # Worker B follows A's writes into a shared hnswlib graph; a deleted vector
    # stays in a graph (mark_deleted) and in the file B saves at close, unless
    # B compacts on a purge as A does.
    def settings(folder: str) -> CacheSettings:
        return CacheSettings(
            timeout_s=10.0,  # a loaded CI machine: no stage timeout
            scope="shared",
            shared_data_acknowledged=True,
            backend=BackendSettings(
                kind="redis",
                redis_url=redis_url,
                redis_namespace=namespace,
                redis_socket_timeout_s=5.0,  # a loaded CI machine
            ),
            index_dir=str(tmp_path / folder),
            flat_max_entries=1,
        )

    a = build(llm=ScriptedLLM(answer), embedder=embedder, cache=settings("a"))
    b = build(llm=ScriptedLLM(answer), embedder=embedder, cache=settings("b"))

    async def b_holds(count: int) -> None:
        for _ in range(200):
            await b.cache.engine.apply_changes()
            if b.cache.stats()["entries"] == count:
                return
            await anyio.sleep(0.02)
        raise AssertionError(f"worker B holds {b.cache.stats()}, not {count}")

    async with a, b:
        for q in QUESTIONS:
            await a.run(q, caller=stagecache.Caller(user_id=USER))
        for q in OTHER_QUESTIONS:
            await a.run(q, caller=stagecache.Caller(user_id=OTHER))
        await b_holds(len(QUESTIONS) + len(OTHER_QUESTIONS))
        engine = a.cache.engine
        marks = [
            e.vector[:32]
            async for batch in engine.backend.scan()
            for e in batch
            if e.user_id == USER
        ]
        assert await a.cache.purge_user(USER) == len(QUESTIONS)
        await b_holds(len(OTHER_QUESTIONS))
    saved = folder_bytes(tmp_path / "b")
    assert any(name.endswith(".hnsw") for name in saved), list(saved)
    assert not found_in(saved, marks), "worker B saved the purged vectors"


async def test_purge_scrubs_scope_records_an_older_worker_left_in_the_stream(
    redis_url: str, namespace: str, raw: Any, embedder: Any
) -> None:
    # Workers before this fix published the raw scope key of an invalidation.
    legacy_keys = [
        f'["per_user",null,"{USER}",null]',
        f'["per_user",null,"{OTHER}",null]',
    ]
    pipeline = build(
        llm=ScriptedLLM(answer),
        embedder=embedder,
        cache=redis_settings(redis_url, namespace),
    )
    async with pipeline:
        await pipeline.run(QUESTIONS[0], caller=stagecache.Caller(user_id=USER))
        await pipeline.run(OTHER_QUESTIONS[0], caller=stagecache.Caller(user_id=OTHER))
        for key in legacy_keys:
            seq = raw.incr(f"{namespace}:seq")
            raw.xadd(
                f"{namespace}:log",
                {"seq": seq, "o": "old-worker", "op": "scope", "sk": key},
            )
        await pipeline.cache.purge_user(USER)
        records = keyspace_bytes(raw, namespace, dump_streams=False)
        scope_records = [
            fields
            for _, fields in raw.xrange(f"{namespace}:log")
            if fields.get(b"op") == b"scope"
        ]
        kept = [
            e.user_id
            async for batch in pipeline.cache.engine.backend.scan()
            for e in batch
        ]
    assert USER.encode() not in records
    # Every old-format scope record goes (each names a user in clear), the other
    # user's included; the other user's entries stay.
    assert scope_records == []
    assert kept == [OTHER]
    assert OTHER_QUESTIONS[0].encode() in records


def test_marks_helpers_see_what_they_look_for() -> None:
    vec = np.arange(16, dtype=np.float32).reshape(2, 8)
    marks = vector_marks(vec)
    assert marks[0] in vec.astype("<f4").tobytes()
    found: Callable[[bytes], list[bytes]] = lambda b: leaks(b, marks)  # noqa: E731
    assert found(b"x" + marks[1]) == [marks[1]]
