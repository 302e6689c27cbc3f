"""Faults injected at a random point: the request is answered, or fails exactly as
the failing stage's policy says, and the cache stays consistent (index == store).

Embedder and backend faults must never fail a request (DESIGN.md section 3); the
model call has the ``fail`` policy, so its errors reach the caller as StageError,
and nothing of that turn is stored.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from rel_helpers import FaultyBackend, FaultyEmbedder, UserLLM

import stagecache
from stagecache.cache import BackendSettings, CacheSettings
from stagecache.config import DEFAULT_STAGES, PipelineConfig
from stagecache.errors import StageError, StageTimeout
from stagecache.stages.llm import Completion

pytestmark = pytest.mark.anyio

# Every user asks each question twice: 4 misses (puts), then 4 hits (touches).
SCRIPT = [
    (user, question)
    for _ in range(2)
    for question in ("How do I reset my password?", "What is the refund policy?")
    for user in ("alice", "bob")
]
SEEDS = [0, 1, 2]


def chain(**overrides: dict[str, Any]) -> PipelineConfig:
    """The default chain, with extra settings for some stages."""
    return PipelineConfig(
        stages=[{"kind": k, **overrides.get(k, {})} for k in DEFAULT_STAGES]
    )


def settings_for(kind: str, tmp_path: Path, **options: Any) -> CacheSettings:
    path = str(tmp_path / "cache.db") if kind == "sqlite" else None
    return CacheSettings(backend=BackendSettings(kind=kind, path=path), **options)  # type: ignore[arg-type]


def inject_backend(pipeline: stagecache.Pipeline, **fault: Any) -> FaultyBackend:
    # build() has no backend= hook: wrap the engine's real backend before warm-up.
    engine = pipeline.cache.engine
    faulty = FaultyBackend(engine._backend, **fault)
    engine._backend = faulty
    return faulty


async def run_script(pipeline: stagecache.Pipeline) -> list[tuple[str, Any]]:
    out = []
    for user, question in SCRIPT:
        result = await pipeline.run(question, caller=stagecache.Caller(user_id=user))
        out.append((user, result))
    return out


def assert_own_answers(results: list[tuple[str, Any]]) -> None:
    for user, result in results:
        assert result.answer.startswith(f"[{user}] answer to: "), result


async def assert_index_matches_store(pipeline: stagecache.Pipeline) -> None:
    engine = pipeline.cache.engine
    assert engine.stats()["entries"] == await engine.backend.count()


@pytest.mark.parametrize("seed", SEEDS)
async def test_embedder_raising_at_a_random_call_never_fails_a_request(
    make_pipeline: Callable[..., Any], embedder: Any, seed: int
) -> None:
    at = random.Random(seed).randint(1, len(SCRIPT))
    faulty = FaultyEmbedder(embedder, at=at)
    pipeline, _ = make_pipeline(llm=UserLLM(), embedder=faulty)
    async with pipeline:
        results = await run_script(pipeline)
    assert_own_answers(results)
    assert [r.cache.status for _, r in results].count("error") == 1
    await assert_index_matches_store(pipeline)


async def test_hung_embedder_is_cut_off_by_the_cache_check_stage_timeout(
    make_pipeline: Callable[..., Any], embedder: Any
) -> None:
    faulty = FaultyEmbedder(embedder, at=1, mode="hang")
    config = chain(cache_check={"timeout_s": 0.3})
    pipeline, _ = make_pipeline(llm=UserLLM(), embedder=faulty, config=config)
    async with pipeline:
        result = await pipeline.run(
            "What is the refund policy?", caller=stagecache.Caller(user_id="alice")
        )
    assert result.answer.startswith("[alice] answer to:")
    assert any(e.startswith("cache_check: StageTimeout") for e in result.errors)


async def answered_while_stuck(
    pipeline: stagecache.Pipeline, release: anyio.Event, wait_s: float = 2.0
) -> Any:
    """Run one request; return its result if it came within ``wait_s`` while a
    component is stuck, else None. ``release`` unsticks it afterwards."""
    box: dict[str, Any] = {}
    done = anyio.Event()

    async def go() -> None:
        box["r"] = await pipeline.run(
            "What is the refund policy?", caller=stagecache.Caller(user_id="alice")
        )
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        with anyio.move_on_after(wait_s):
            await done.wait()
        in_time = box.get("r")
        release.set()
    return in_time


# Regression test for finding F1: a hung embedder held the request forever (fixed).
async def test_hung_embedder_does_not_hold_the_request_with_default_config(
    make_pipeline: Callable[..., Any], embedder: Any
) -> None:
    faulty = FaultyEmbedder(embedder, at=1, mode="hang")
    pipeline, _ = make_pipeline(llm=UserLLM(), embedder=faulty)
    async with pipeline:
        # The cache_check stage's default limit is 2 s; 5 s leaves room for a slow
        # machine while still proving the request is not held forever.
        result = await answered_while_stuck(pipeline, faulty.release, wait_s=5.0)
    assert result is not None
    assert result.cache.status == "error"


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("op", ["put", "get_many", "touch"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_backend_raising_at_a_random_call_never_fails_a_request(
    make_pipeline: Callable[..., Any], tmp_path: Path, backend: str, op: str, seed: int
) -> None:
    at = random.Random(seed).randint(1, 3)
    pipeline, _ = make_pipeline(llm=UserLLM(), cache=settings_for(backend, tmp_path))
    faulty = inject_backend(pipeline, op=op, at=at)
    async with pipeline:
        results = await run_script(pipeline)
        assert_own_answers(results)
        assert faulty.entered.is_set()
        assert any(any("cache." in e for e in r.errors) for _, r in results)
        await assert_index_matches_store(pipeline)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_hung_backend_lookup_is_cut_off_by_the_cache_timeout(
    make_pipeline: Callable[..., Any], tmp_path: Path, backend: str
) -> None:
    pipeline, _ = make_pipeline(
        llm=UserLLM(), cache=settings_for(backend, tmp_path, timeout_s=0.2)
    )
    alice = stagecache.Caller(user_id="alice")
    faulty = inject_backend(pipeline, op="get_many", mode="hang")
    async with pipeline:
        await pipeline.run("What is the refund policy?", caller=alice)
        result = await answered_while_stuck(pipeline, faulty.release)
    assert result is not None and result.cache.status == "error"


# Regression test for finding F2: a hung backend write was never cut off (fixed).
@pytest.mark.parametrize("op", ["put", "touch"])
async def test_hung_backend_write_is_cut_off_by_the_cache_timeout(
    make_pipeline: Callable[..., Any], tmp_path: Path, op: str
) -> None:
    pipeline, _ = make_pipeline(
        llm=UserLLM(), cache=settings_for("memory", tmp_path, timeout_s=0.2)
    )
    faulty = inject_backend(pipeline, op=op, mode="hang")
    alice = stagecache.Caller(user_id="alice")
    async with pipeline:
        if op == "touch":  # touch runs on a hit: store an entry first
            faulty.op = "none"
            await pipeline.run("What is the refund policy?", caller=alice)
            faulty.op = "touch"
        result = await answered_while_stuck(pipeline, faulty.release)
    assert result is not None


class RaisingLLM:
    model_id = "raising"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, turn: Any) -> Completion:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("injected: upstream reset")
        return Completion(text=f"[{turn.caller.user_id}] answer to: {turn.query}")


class GarbageLLM:
    model_id = "garbage"

    def __init__(self, value: Any) -> None:
        self.value = value

    async def complete(self, turn: Any) -> Any:
        return self.value


async def test_llm_error_reaches_the_caller_as_a_stage_error_and_stores_nothing(
    make_pipeline: Callable[..., Any],
) -> None:
    pipeline, _ = make_pipeline(llm=RaisingLLM())
    with pytest.raises(StageError) as info:
        async with pipeline:
            await pipeline.run(
                "What is the refund policy?", caller=stagecache.Caller(user_id="alice")
            )
    assert info.value.stage == "llm"
    assert pipeline.cache.stats()["entries"] == 0


async def test_request_retried_after_an_llm_error_is_not_stuck_behind_its_flight(
    make_pipeline: Callable[..., Any],
) -> None:
    pipeline, _ = make_pipeline(llm=RaisingLLM())
    alice = stagecache.Caller(user_id="alice")
    async with pipeline:
        with pytest.raises(StageError):
            await pipeline.run("What is the refund policy?", caller=alice)
        with anyio.fail_after(10):
            result = await pipeline.run("What is the refund policy?", caller=alice)
    assert result.answer.startswith("[alice]") and result.cache.stored


async def test_llm_timeout_is_a_stage_timeout_and_stores_nothing(
    make_pipeline: Callable[..., Any],
) -> None:
    slow = UserLLM(delay_s=30)
    config = chain(llm={"timeout_s": 0.2})
    pipeline, _ = make_pipeline(llm=slow, config=config)
    async with pipeline:
        with pytest.raises(StageTimeout):
            await pipeline.run(
                "What is the refund policy?", caller=stagecache.Caller(user_id="alice")
            )
        assert pipeline.cache.stats()["entries"] == 0


@pytest.mark.parametrize(
    "garbage",
    [None, 42, "plain string", Completion(text=None)],  # type: ignore[arg-type]
    ids=["none", "int", "str", "text-none"],
)
async def test_llm_returning_garbage_is_a_stage_error_and_stores_nothing(
    make_pipeline: Callable[..., Any], garbage: Any
) -> None:
    pipeline, _ = make_pipeline(llm=GarbageLLM(garbage))
    async with pipeline:
        with pytest.raises(StageError) as info:
            await pipeline.run(
                "What is the refund policy?", caller=stagecache.Caller(user_id="alice")
            )
        assert info.value.stage == "llm"
        assert pipeline.cache.stats()["entries"] == 0


async def test_llm_returning_an_empty_answer_is_answered_and_not_stored(
    make_pipeline: Callable[..., Any],
) -> None:
    pipeline, _ = make_pipeline(llm=GarbageLLM(Completion(text="")))
    async with pipeline:
        result = await pipeline.run(
            "What is the refund policy?", caller=stagecache.Caller(user_id="alice")
        )
        assert result.answer == "" and not result.cache.stored
        assert pipeline.cache.stats()["entries"] == 0


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_request_cancelled_during_its_store_leaves_index_and_store_agreeing(
    make_pipeline: Callable[..., Any], tmp_path: Path, backend: str, seed: int
) -> None:
    delay = random.Random(seed).uniform(0.0, 0.05)
    pipeline, _ = make_pipeline(llm=UserLLM(), cache=settings_for(backend, tmp_path))
    faulty = inject_backend(pipeline, op="put", mode="slow", delay_s=0.05)
    alice = stagecache.Caller(user_id="alice")
    async with pipeline:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                partial(pipeline.run, "What is the refund policy?", caller=alice)
            )
            await faulty.entered.wait()
            await anyio.sleep(delay)
            tg.cancel_scope.cancel()
        await assert_index_matches_store(pipeline)
        with anyio.fail_after(10):  # the cancelled leader released its flight
            again = await pipeline.run("What is the refund policy?", caller=alice)
        assert again.answer.startswith("[alice] answer to:")
        assert pipeline.cache.stats()["entries"] == 1
        await assert_index_matches_store(pipeline)


class Projected:
    """The real embedder's vectors cut to their first 32 dimensions (renormalised)."""

    dim = 32

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id = f"{inner.model_id}/32"

    async def embed(self, texts: Any) -> Any:
        v = (await self.inner.embed(texts))[:, : self.dim]
        return v / ((v**2).sum(axis=1, keepdims=True) ** 0.5)


# Regression test for finding F5: build() ignored the embedder's dimension (fixed).
async def test_pipeline_with_an_embedder_of_another_dimension_caches(
    make_pipeline: Callable[..., Any], embedder: Any
) -> None:
    pipeline, _ = make_pipeline(llm=UserLLM(), embedder=Projected(embedder))
    alice = stagecache.Caller(user_id="alice")
    async with pipeline:
        await pipeline.run("What is the refund policy?", caller=alice)
        again = await pipeline.run("What is the refund policy?", caller=alice)
    assert again.cache.hit
