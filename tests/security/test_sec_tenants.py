"""Tenants are isolated (issue 13, finding 2), on the memory, sqlite and redis
backends: memory facts, the per-user cap, purge and stats all count a user inside
its tenant, and the empty string is not a second "no tenant"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tenant_backends import MakeSettings, anyio_backend, cache_settings

import stagecache
from stagecache import Caller
from stagecache._model import Turn
from stagecache.config import PipelineConfig, build
from stagecache.errors import InputError
from stagecache.testing import ScriptedLLM

__all__ = ["anyio_backend", "cache_settings"]

pytestmark = pytest.mark.anyio

ACME = Caller(user_id="1001", tenant="acme")
GLOBEX = Caller(user_id="1001", tenant="globex")
NOBODY = Caller(user_id="1001")
FACT = "Alice is vegetarian and cooks dinner."
QUESTION = "What should I cook for dinner?"
QUESTIONS = [
    "How do I reset my password?",
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Which planet is closest to the sun?",
    "How do I bake sourdough bread?",
]


class MemoryLLM(ScriptedLLM):
    """A scripted model that records the memory facts each call was given."""

    def __init__(self) -> None:
        super().__init__(lambda prompt: f"answer to: {prompt}")
        self.memories: list[list[str]] = []

    async def complete(self, turn: Turn) -> Any:
        self.memories.append(list(turn.memory))
        return await super().complete(turn)


def make(
    embedder: Any, settings: MakeSettings, **cache: Any
) -> tuple[stagecache.Pipeline, MemoryLLM]:
    llm = MemoryLLM()
    config = PipelineConfig(cache=settings(**cache))
    return build(config, llm=llm, embedder=embedder), llm


async def test_facts_remembered_in_one_tenant_never_reach_another(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    pipeline, llm = make(embedder, cache_settings)
    async with pipeline:
        await pipeline.cache.remember("1001", FACT, tenant="acme")
        await pipeline.run(QUESTION, caller=GLOBEX)
        await pipeline.run(QUESTION, caller=NOBODY)
        await pipeline.run(QUESTION, caller=ACME)
    assert llm.memories == [[], [], [FACT]]


async def test_facts_remembered_without_a_tenant_stay_there(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    # The replay of the finding: remember() had no tenant, and the facts of user
    # "1001" reached Caller(user_id="1001", tenant="globex").
    pipeline, llm = make(embedder, cache_settings)
    async with pipeline:
        await pipeline.cache.remember("1001", FACT)
        globex = await pipeline.run(QUESTION, caller=GLOBEX)
        again = await pipeline.run(QUESTION, caller=GLOBEX)
        nobody = await pipeline.run(QUESTION, caller=NOBODY)
    assert llm.memories == [[], [FACT]]
    assert globex.cache.stored and again.cache.hit
    assert nobody.cache.status == "miss"


async def test_the_per_user_cap_counts_each_tenant_apart(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    pipeline, llm = make(embedder, cache_settings, max_entries_per_user=5)
    async with pipeline:
        for q in QUESTIONS:
            assert (await pipeline.run(q, caller=ACME)).cache.stored
        for q in QUESTIONS:
            assert (await pipeline.run(q, caller=GLOBEX)).cache.stored
        acme = [await pipeline.run(q, caller=ACME) for q in QUESTIONS]
        stats = pipeline.cache.stats()
    assert [r.cache.status for r in acme] == ["hit"] * 5
    assert llm.calls == 10
    assert stats["entries"] == 10 and stats["users"] == 2


async def test_the_cap_still_holds_inside_one_tenant(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    pipeline, _ = make(embedder, cache_settings, max_entries_per_user=3)
    async with pipeline:
        for q in QUESTIONS:
            await pipeline.run(q, caller=ACME)
        stats = pipeline.cache.stats()
    assert stats["entries"] == 3


async def _fill(pipeline: stagecache.Pipeline) -> None:
    for caller in (ACME, GLOBEX, NOBODY):
        for q in QUESTIONS[:2]:
            assert (await pipeline.run(q, caller=caller)).cache.stored


async def _statuses(pipeline: stagecache.Pipeline, caller: Caller) -> list[str]:
    return [(await pipeline.run(q, caller=caller)).cache.status for q in QUESTIONS[:2]]


async def test_purge_user_removes_one_tenant_only(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    pipeline, _ = make(embedder, cache_settings)
    async with pipeline:
        await _fill(pipeline)
        await pipeline.cache.remember("1001", FACT, tenant="acme")
        await pipeline.cache.remember("1001", FACT, tenant="globex")
        assert await pipeline.cache.purge_user("1001", tenant="acme") == 2
        assert pipeline.cache.facts("1001", tenant="acme") == []
        assert pipeline.cache.facts("1001", tenant="globex") == [FACT]
        assert await _statuses(pipeline, GLOBEX) == ["hit", "hit"]
        assert await _statuses(pipeline, NOBODY) == ["hit", "hit"]
        # tenant=None is the caller without a tenant, not "every tenant".
        assert await pipeline.cache.purge_user("1001") == 2
        assert await _statuses(pipeline, GLOBEX) == ["hit", "hit"]
        assert await pipeline.cache.purge_user("1001", all_tenants=True) == 2
        assert pipeline.cache.facts("1001", tenant="globex") == []
        assert pipeline.cache.stats()["entries"] == 0


async def test_a_purge_of_one_tenant_holds_after_a_restart(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    kind = cache_settings.kind  # type: ignore[attr-defined]
    pipeline, _ = make(embedder, cache_settings)
    async with pipeline:
        await _fill(pipeline)
        assert await pipeline.cache.purge_user("1001", tenant="globex") == 2
    if kind == "memory":
        return  # nothing survives a restart
    again, llm = make(embedder, cache_settings)
    async with again:
        assert again.cache.stats()["entries"] == 4
        assert await _statuses(again, ACME) == ["hit", "hit"]
        assert await _statuses(again, NOBODY) == ["hit", "hit"]
        assert await _statuses(again, GLOBEX) == ["miss", "miss"]
    assert llm.calls == 2


async def test_purge_needs_a_tenant_or_all_tenants_not_both(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    pipeline, _ = make(embedder, cache_settings)
    async with pipeline:
        with pytest.raises(InputError, match="all_tenants"):
            await pipeline.cache.purge_user("1001", tenant="acme", all_tenants=True)


def test_an_empty_tenant_is_not_a_second_no_tenant() -> None:
    with pytest.raises(InputError, match=r"caller\.tenant"):
        Caller(user_id="1001", tenant="")


async def test_stats_count_a_user_once_per_tenant(
    embedder: Any, cache_settings: MakeSettings
) -> None:
    pipeline, _ = make(embedder, cache_settings)
    async with pipeline:
        await _fill(pipeline)
        stats = pipeline.cache.stats()
    assert stats["users"] == 3 and stats["entries"] == 6


def test_the_purge_command_purges_one_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from stagecache import cli

    db = tmp_path / "cache.db"
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[cache]\nbackend = {{ kind = "sqlite", path = "{db}" }}\n', encoding="utf-8"
    )

    async def fill() -> None:
        pipeline = stagecache.load(config, llm=ScriptedLLM(lambda p: "ok"))
        async with pipeline:
            await _fill(pipeline)

    anyio.run(fill)
    assert cli.main(["purge", "1001", "--tenant", "acme", "--config", str(config)]) == 0
    assert cli.main(["purge", "1001", "--tenant", "", "--config", str(config)]) == 2

    async def count() -> int:
        pipeline = stagecache.load(config, llm=ScriptedLLM(lambda p: "ok"))
        async with pipeline:
            return pipeline.cache.stats()["entries"]

    assert anyio.run(count) == 4
    assert cli.main(["purge", "1001", "--all-tenants", "--config", str(config)]) == 0
    assert anyio.run(count) == 0


async def test_an_older_sqlite_file_gets_the_tenants_from_its_scope_keys(
    embedder: Any, tmp_path: Path
) -> None:
    import sqlite3

    from stagecache.cache import BackendSettings, CacheSettings

    db = tmp_path / "cache.db"

    def settings(**options: Any) -> CacheSettings:
        return CacheSettings(
            backend=BackendSettings(kind="sqlite", path=str(db)), **options
        )

    pipeline, _ = make(embedder, settings)
    async with pipeline:
        await _fill(pipeline)
    with sqlite3.connect(db) as conn:  # as written before entries had a tenant
        conn.execute("ALTER TABLE entries DROP COLUMN tenant")
    conn.close()
    again, _ = make(embedder, settings)
    async with again:
        assert again.cache.stats()["users"] == 3
        assert await again.cache.purge_user("1001", tenant="acme") == 2
        assert await _statuses(again, GLOBEX) == ["hit", "hit"]
    with sqlite3.connect(db) as conn:
        tenants = sorted(
            str(t) for (t,) in conn.execute("SELECT tenant FROM entries").fetchall()
        )
    conn.close()
    assert tenants == ["None", "None", "globex", "globex"]


async def test_redis_keeps_one_per_user_index_per_tenant(embedder: Any) -> None:
    from tenant_backends import REDIS_URL, drop_namespace, redis_listening

    from stagecache.cache import BackendSettings, CacheSettings

    if not redis_listening():
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis

    namespace = f"sctenant-{__import__('uuid').uuid4().hex[:12]}"

    def settings(**options: Any) -> CacheSettings:
        backend = BackendSettings(
            kind="redis", redis_url=REDIS_URL, redis_namespace=namespace
        )
        return CacheSettings(backend=backend, **options)

    raw = redis.Redis.from_url(REDIS_URL)
    try:
        pipeline, _ = make(embedder, settings)
        async with pipeline:
            await _fill(pipeline)
            p = f"{namespace}:u:"
            sizes = [
                raw.zcard(p + k) for k in ("acme\x1f1001", "globex\x1f1001", "1001")
            ]
            assert sizes == [2, 2, 2]
            await pipeline.cache.purge_user("1001", tenant="acme")
            assert not raw.exists(p + "acme\x1f1001")
            assert raw.zcard(p + "globex\x1f1001") == 2
            await pipeline.cache.purge_user("1001", all_tenants=True)
            assert list(raw.scan_iter(match=p + "*")) == []
    finally:
        raw.close()
        drop_namespace(namespace)
