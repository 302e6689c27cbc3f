"""SQLite persistence across processes, corrupted files, failing backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence

import anyio
import numpy as np
import pytest

from stagecache._model import Caller
from stagecache.cache import (
    CacheSettings,
    Entry,
    KeyParts,
    MemoryBackend,
    Scope,
    SemanticCache,
    SqliteBackend,
)
from stagecache.errors import BackendUnavailable, CacheError

PARTS = KeyParts("m", "i", "c")
Q = "How do I reset my password?"

SCRIPT = textwrap.dedent(
    """
    import sys, anyio, numpy as np
    from stagecache._model import Caller
    from stagecache.cache import CacheSettings, KeyParts, SemanticCache, SqliteBackend

    db, vec, mode = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]

    async def main():
        async with SemanticCache(CacheSettings(), backend=SqliteBackend(db)) as cache:
            scope = cache.scope_for(Caller(user_id="alice"))
            parts = KeyParts("m", "i", "c")
            if mode == "store":
                print(await cache.store(scope, "q", vec, parts, "persisted answer"))
            else:
                found = await cache.lookup(scope, vec, parts, "q")
                print(found.hit.entry_id if found.hit else "MISS", found.hit.answer)

    anyio.run(main)
    """
)


def test_sqlite_entries_survive_a_process_restart(embed, tmp_path) -> None:
    db, vec = tmp_path / "cache.db", tmp_path / "v.npy"
    np.save(vec, embed(Q))

    def run(mode: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(db), str(vec), mode],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return out.stdout.strip()

    entry_id = run("store")
    assert run("lookup") == f"{entry_id} persisted answer"


@pytest.mark.anyio
async def test_corrupted_sqlite_file_raises_a_clear_error(tmp_path) -> None:
    db = tmp_path / "broken.db"
    db.write_bytes(b"this is not a database" * 100)
    cache = SemanticCache(CacheSettings(), backend=SqliteBackend(db))
    with pytest.raises(CacheError) as info:
        await cache.warm_up()
    assert str(db) in str(info.value) and "delete it" in str(info.value)


@pytest.mark.anyio
async def test_wrong_dimension_rows_raise_a_clear_error(embed, tmp_path) -> None:
    db = tmp_path / "c.db"
    async with SemanticCache(CacheSettings(), backend=SqliteBackend(db)) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        await cache.store(scope, Q, embed(Q), PARTS, "a")
    with pytest.raises(CacheError, match="another embedding model"):
        await SemanticCache(
            CacheSettings(), backend=SqliteBackend(db), dim=768
        ).warm_up()


@pytest.mark.anyio
async def test_sqlite_hit_counts_persist_across_a_reopen(embed, tmp_path) -> None:
    db = tmp_path / "c.db"
    async with SemanticCache(CacheSettings(), backend=SqliteBackend(db)) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        entry_id = await cache.store(scope, Q, embed(Q), PARTS, "a")
        for _ in range(3):
            assert (await cache.lookup(scope, embed(Q), PARTS, Q)).hit is not None
        seen = await cache.backend.get_many([entry_id or ""])
        assert seen[entry_id or ""].hits == 3
    backend = SqliteBackend(db)
    await backend.open()
    try:
        stored = await backend.get_many([entry_id or ""])
    finally:
        await backend.aclose()
    assert stored[entry_id or ""].hits == 3


class FlakyBackend(MemoryBackend):
    """A memory backend whose writes fail or stall on demand."""

    __slots__ = ("delay", "fail")

    def __init__(self) -> None:
        super().__init__()
        self.fail = False
        self.delay = 0.0

    async def put(self, entry: Entry) -> None:
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail:
            raise BackendUnavailable("disk full")
        await super().put(entry)

    async def delete(self, entry_ids: Sequence[str]) -> int:
        if self.fail:
            raise BackendUnavailable("disk full")
        return await super().delete(entry_ids)


@pytest.mark.anyio
async def test_failed_backend_write_leaves_the_index_unchanged(embed) -> None:
    backend = FlakyBackend()
    async with SemanticCache(CacheSettings(), backend=backend) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        backend.fail = True
        with pytest.raises(BackendUnavailable):
            await cache.store(scope, Q, embed(Q), PARTS, "a")
        assert cache.stats()["entries"] == 0 and await backend.count() == 0
        assert (await cache.lookup(scope, embed(Q), PARTS, Q)).hit is None
        backend.fail = False
        assert await cache.store(scope, Q, embed(Q), PARTS, "a") is not None


@pytest.mark.anyio
async def test_cancelled_store_leaves_index_and_backend_consistent(embed) -> None:
    backend = FlakyBackend()
    backend.delay = 0.05
    async with SemanticCache(CacheSettings(), backend=backend) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        texts = ["a question", "another question", "a third one"]
        with anyio.move_on_after(0.01):
            async with anyio.create_task_group() as tg:
                for t in texts:
                    tg.start_soon(cache.store, scope, t, embed(t), PARTS, t)
        await anyio.sleep(0.3)
        ids_in_backend = set()
        async for batch in backend.scan():
            ids_in_backend.update(e.entry_id for e in batch)
        assert cache.stats()["entries"] == len(ids_in_backend)
        for entry_id in ids_in_backend:
            entry = (await backend.get_many([entry_id]))[entry_id]
            found = await cache.lookup(scope, embed(entry.query), PARTS, entry.query)
            assert found.hit is not None and found.hit.entry_id == entry_id


@pytest.mark.anyio
async def test_concurrent_identical_stores_make_one_entry(embed) -> None:
    async with SemanticCache(CacheSettings()) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        ids: list[str | None] = []

        async def one() -> None:
            ids.append(await cache.store(scope, Q, embed(Q), PARTS, "a"))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        assert len(set(ids)) == 1 and cache.stats()["entries"] == 1


@pytest.mark.anyio
async def test_single_flight_makes_one_model_call(embed) -> None:
    calls = 0
    answers: list[str] = []
    async with SemanticCache(CacheSettings()) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)

        async def request() -> None:
            nonlocal calls
            async with await cache.single_flight(scope, Q, PARTS) as flight:
                found = await cache.lookup(scope, embed(Q), PARTS, Q)
                if found.hit is not None:
                    answers.append(found.hit.answer)
                    return
                calls += 1
                await anyio.sleep(0.05)  # the model call
                await cache.store(scope, Q, embed(Q), PARTS, "fresh")
                answers.append("fresh")
                assert flight.leader

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(request)
        assert calls == 1 and answers == ["fresh"] * 8
        assert cache.stats()["flights"] == 0
