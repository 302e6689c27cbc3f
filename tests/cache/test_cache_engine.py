"""Hit rule, TTL, caps, invalidation, purge and feedback of the engine."""

from __future__ import annotations

import pytest

from stagecache._model import Caller, Candidate, Verdict
from stagecache.cache import (
    CacheSettings,
    KeyParts,
    Scope,
    SemanticCache,
    SqliteBackend,
    TtlPattern,
)
from stagecache.pipeline._events import CacheEvicted, Event, EventBus, Invalidated

PARTS = KeyParts("gpt-x", "instr-1", "ctx-1")
Q = "How do I reset my password?"
PARA = "How can I reset my password?"


def scope_of(cache: SemanticCache, user: str, session: str | None = None) -> Scope:
    scope = cache.scope_for(Caller(user_id=user, session_id=session))
    assert isinstance(scope, Scope)
    return scope


def capture() -> tuple[EventBus, list[Event]]:
    bus, seen = EventBus(), []
    bus.subscribe(seen.append)
    return bus, seen


@pytest.mark.anyio
async def test_paraphrase_hits_and_unrelated_misses(embed) -> None:
    async with SemanticCache(CacheSettings(threshold=0.85)) as cache:
        scope = scope_of(cache, "alice")
        eid = await cache.store(scope, Q, embed(Q), PARTS, "use the reset link")
        found = await cache.lookup(scope, embed(PARA), PARTS, PARA)
        assert found.hit is not None and found.hit.entry_id == eid
        assert found.reason == "hit" and found.hit.answer == "use the reset link"
        assert found.entry_age_s is not None and found.entry_age_s >= 0
        other = "What is the capital of Australia?"
        miss = await cache.lookup(scope, embed(other), PARTS, other)
        assert miss.hit is None and miss.reason == "below_threshold"
        assert miss.best_similarity is not None and miss.best_similarity < 0.85


@pytest.mark.anyio
@pytest.mark.parametrize(
    "changed",
    [
        KeyParts("other-model", "instr-1", "ctx-1"),
        KeyParts("gpt-x", "instr-2", "ctx-1"),
        KeyParts("gpt-x", "instr-1", "ctx-2"),
    ],
)
async def test_changed_key_part_misses(embed, changed: KeyParts) -> None:
    async with SemanticCache(CacheSettings()) as cache:
        scope = scope_of(cache, "alice")
        await cache.store(scope, Q, embed(Q), PARTS, "a")
        found = await cache.lookup(scope, embed(Q), changed, Q)
        assert found.hit is None and found.reason == "key_mismatch"


@pytest.mark.anyio
async def test_mismatching_candidate_is_skipped_for_the_next(embed) -> None:
    async with SemanticCache(CacheSettings(threshold=0.8)) as cache:
        scope = scope_of(cache, "alice")
        await cache.store(scope, Q, embed(Q), KeyParts("m2", "i", "c"), "wrong model")
        good = await cache.store(scope, PARA, embed(PARA), PARTS, "right")
        found = await cache.lookup(scope, embed(Q), PARTS, Q)
        assert found.hit is not None and found.hit.entry_id == good


@pytest.mark.anyio
async def test_expired_entry_misses_and_is_reclaimed(embed, clock) -> None:
    bus, seen = capture()
    async with SemanticCache(
        CacheSettings(default_ttl=60), clock=clock, events=bus
    ) as c:
        scope = scope_of(c, "alice")
        await c.store(scope, Q, embed(Q), PARTS, "a")
        clock.now += 59
        assert (await c.lookup(scope, embed(Q), PARTS, Q)).hit is not None
        clock.now += 2
        found = await c.lookup(scope, embed(Q), PARTS, Q)
        assert found.hit is None and found.reason == "expired"
        assert c.stats()["entries"] == 0
        assert any(isinstance(e, CacheEvicted) and e.reason == "ttl" for e in seen)


@pytest.mark.anyio
async def test_sweep_reclaims_expired_entries_without_reads(embed, clock) -> None:
    async with SemanticCache(CacheSettings(default_ttl=10), clock=clock) as cache:
        for user in ("a", "b", "c"):
            await cache.store(scope_of(cache, user), Q, embed(Q), PARTS, "x")
        clock.now += 11
        assert await cache.sweep() == 3
        assert cache.stats()["entries"] == 0 and cache.stats()["scopes"] == 0


def test_ttl_patterns_first_match_wins() -> None:
    settings = CacheSettings(
        ttl_patterns=[
            TtlPattern(r"(?i)\bweather\b", 300),
            TtlPattern(r"(?i)today", 600),
        ]
    )
    cache = SemanticCache(settings)
    assert cache.ttl_for("Weather today?") == 300
    assert cache.ttl_for("what happened today") == 600
    assert cache.ttl_for("capital of France") == 3600


@pytest.mark.anyio
async def test_user_cap_evicts_least_recently_used_and_hit_refreshes(
    embed, clock
) -> None:
    bus, seen = capture()
    settings = CacheSettings(max_entries_per_user=2)
    async with SemanticCache(settings, clock=clock, events=bus) as cache:
        scope = scope_of(cache, "alice")
        texts = [
            "How to bake bread?",
            "What is the speed of light?",
            "Best hiking boots?",
        ]
        first = await cache.store(scope, texts[0], embed(texts[0]), PARTS, "0")
        clock.now += 1
        second = await cache.store(scope, texts[1], embed(texts[1]), PARTS, "1")
        clock.now += 1
        hit = await cache.lookup(scope, embed(texts[0]), PARTS, texts[0])
        assert hit.hit is not None and hit.hit.entry_id == first
        clock.now += 1
        await cache.store(scope, texts[2], embed(texts[2]), PARTS, "2")
        assert cache.stats()["entries"] == 2
        gone = await cache.lookup(scope, embed(texts[1]), PARTS, texts[1])
        assert gone.hit is None or gone.hit.entry_id != second
        kept = await cache.lookup(scope, embed(texts[0]), PARTS, texts[0])
        assert kept.hit is not None and kept.hit.entry_id == first
        assert [e.reason for e in seen if isinstance(e, CacheEvicted)] == ["lru"]


@pytest.mark.anyio
async def test_total_cap_evicts_across_users(embed, clock) -> None:
    settings = CacheSettings(max_total_entries=2)
    async with SemanticCache(settings, clock=clock) as cache:
        for i, user in enumerate(("a", "b", "c")):
            clock.now += 1
            await cache.store(scope_of(cache, user), Q, embed(Q), PARTS, str(i))
        assert cache.stats()["entries"] == 2
        assert (
            await cache.lookup(scope_of(cache, "a"), embed(Q), PARTS, Q)
        ).hit is None
        found = await cache.lookup(scope_of(cache, "c"), embed(Q), PARTS, Q)
        assert found.hit is not None and found.hit.answer == "2"


@pytest.mark.anyio
async def test_invalidate_empties_only_that_scope(embed) -> None:
    bus, seen = capture()
    async with SemanticCache(CacheSettings(), events=bus) as cache:
        alice, bob = scope_of(cache, "alice"), scope_of(cache, "bob")
        await cache.store(alice, Q, embed(Q), PARTS, "a")
        await cache.store(
            alice, "Weather in Paris?", embed("Weather in Paris?"), PARTS, "b"
        )
        await cache.store(bob, Q, embed(Q), PARTS, "c")
        assert await cache.invalidate(alice) == 2
        assert (await cache.lookup(alice, embed(Q), PARTS, Q)).hit is None
        assert (await cache.lookup(bob, embed(Q), PARTS, Q)).hit is not None
        events = [e for e in seen if isinstance(e, Invalidated)]
        assert [(e.scope, e.count, e.reason) for e in events] == [
            (alice.hash, 2, "write")
        ]
        assert await cache.invalidate(alice) == 0


@pytest.mark.anyio
async def test_purge_removes_every_mode_and_returns_count(embed, tmp_path) -> None:
    path = tmp_path / "c.db"
    modes = [
        CacheSettings(scope="per_user"),
        CacheSettings(scope="per_session"),
        CacheSettings(scope="shared", shared_data_acknowledged=True),
    ]
    for settings in modes:
        async with SemanticCache(settings, backend=SqliteBackend(path)) as cache:
            for user in ("alice", "bob"):
                scope = cache.scope_for(Caller(user_id=user, session_id="s1"))
                assert isinstance(scope, Scope)
                await cache.store(scope, f"{user} {Q}", embed(Q), PARTS, user)
    index_dir = str(tmp_path / "idx")
    settings = CacheSettings(index_dir=index_dir)
    async with SemanticCache(settings, backend=SqliteBackend(path)) as cache:
        assert cache.stats()["entries"] == 6
        assert await cache.purge_user("alice") == 3
        assert cache.stats()["entries"] == 3
        assert await cache.backend.count() == 3
        assert await cache.purge_user("alice") == 0
    async with SemanticCache(settings, backend=SqliteBackend(path)) as cache:
        assert cache.stats()["entries"] == 3  # nothing of alice came back


@pytest.mark.anyio
async def test_feedback_counts_and_negative_removes(embed) -> None:
    settings = CacheSettings(negative_feedback_limit=2)
    async with SemanticCache(settings) as cache:
        scope = scope_of(cache, "alice")
        eid = await cache.store(scope, Q, embed(Q), PARTS, "a")
        assert eid is not None
        assert await cache.feedback(eid, True)
        assert await cache.feedback(eid, False)
        assert await cache.feedback(eid, False)  # net -1: kept
        entry = (await cache.backend.get_many([eid]))[eid]
        assert (entry.positive, entry.negative) == (1, 2)
        assert await cache.feedback(eid, False)  # net -2: removed
        assert cache.stats()["entries"] == 0
        assert not await cache.feedback(eid, True)
        assert not await cache.feedback("nope", True)


class RejectFirst:
    name = "reject-first"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def verify(self, query: str, candidate: Candidate) -> Verdict:
        self.asked.append(candidate.answer)
        return Verdict(accept=len(self.asked) > 1, score=0.5, reason="test")


@pytest.mark.anyio
async def test_verifier_is_asked_best_first_and_first_accept_wins(embed) -> None:
    verifier = RejectFirst()
    settings = CacheSettings(threshold=0.8)
    async with SemanticCache(settings, verifier=verifier) as cache:
        scope = scope_of(cache, "alice")
        await cache.store(scope, Q, embed(Q), PARTS, "exact")
        await cache.store(scope, PARA, embed(PARA), PARTS, "para")
        found = await cache.lookup(scope, embed(Q), PARTS, Q)
        assert verifier.asked == ["exact", "para"]
        assert found.hit is not None and found.hit.answer == "para"
        assert found.verdict is not None and found.verdict.accept
        cache.verifier = None
        assert (await cache.lookup(scope, embed(Q), PARTS, Q)).hit.answer == "exact"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_store_dedupes_same_normalised_query(embed) -> None:
    async with SemanticCache(CacheSettings()) as cache:
        scope = scope_of(cache, "alice")
        a = await cache.store(scope, Q, embed(Q), PARTS, "old")
        b = await cache.store(
            scope, "  how do i RESET my password? ", embed(Q), PARTS, "new"
        )
        assert a == b and cache.stats()["entries"] == 1
        found = await cache.lookup(scope, embed(Q), PARTS, Q)
        assert found.hit is not None and found.hit.answer == "new"
        c = await cache.store(
            scope, Q, embed(Q), KeyParts("m", "i", "c"), "other parts"
        )
        assert c != a and cache.stats()["entries"] == 2
