"""``pipeline.cache.stats()``: hits, misses, tokens and cost saved, durable counts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from stagecache import Caller
from stagecache.cache import CacheSettings
from stagecache.cache._settings import BackendSettings
from stagecache.config import PipelineConfig, PipelineSection
from stagecache.errors import BackendUnavailable
from stagecache.exporters import ModelPrice

pytestmark = pytest.mark.anyio

ALICE = Caller(user_id="alice")
PRICED = ModelPrice(input_per_1k=0.5, output_per_1k=2.0)
QUESTION = "What is the warranty period of the blender?"


def _config(prices: Mapping[str, ModelPrice]) -> PipelineConfig:
    return PipelineConfig(pipeline=PipelineSection(prices=dict(prices)))


def _sqlite(path: Path) -> CacheSettings:
    return CacheSettings(backend=BackendSettings(kind="sqlite", path=str(path)))


async def _usage(pipeline: Any, model: str) -> tuple[int, int]:
    """The usage stored with the one entry of ``model``."""
    (entry,) = [
        e
        for e in await pipeline.cache.entries()
        if e.parts.model_id.startswith(model + "|")
    ]
    return int(entry.metadata["prompt_tokens"]), int(
        entry.metadata["completion_tokens"]
    )


async def test_a_hit_saves_its_usage_at_the_models_price(
    make_pipeline: Callable[..., tuple[Any, Any]], anyio_backend: str
) -> None:
    pipeline, _ = make_pipeline(config=_config({"gpt-priced": PRICED}))
    async with pipeline:
        for model in ("gpt-priced", "gpt-free"):
            first = await pipeline.run(QUESTION, caller=ALICE, model=model)
            second = await pipeline.run(QUESTION, caller=ALICE, model=model)
            assert (first.cache.hit, second.cache.hit) == (False, True)
        prompt, completion = await _usage(pipeline, "gpt-priced")
        free = sum(await _usage(pipeline, "gpt-free"))
        stats = pipeline.cache.stats()
    cost = round((prompt * 0.5 + completion * 2.0) / 1000, 6)
    priced = stats["by_model"]["gpt-priced"]
    assert (priced["hits"], priced["misses"], priced["hit_rate"]) == (1, 1, 0.5)
    assert priced["tokens_saved"] == prompt + completion
    assert priced["cost_saved_usd"] == pytest.approx(cost)
    assert priced["unpriced_hits"] == 0
    # No price for this model: its cost is unknown, not 0.
    unknown = stats["by_model"]["gpt-free"]
    assert unknown["cost_saved_usd"] is None and unknown["unpriced_hits"] == 1
    assert unknown["tokens_saved"] == free
    # Totals: the priced part, and how many hits it leaves out.
    assert stats["cost_saved_usd"] == pytest.approx(cost)
    assert (stats["hits"], stats["misses"], stats["unpriced_hits"]) == (2, 2, 1)
    per_user = stats["by_scope_mode"]["per_user"]
    assert per_user["cost_saved_usd"] == pytest.approx(cost)
    assert per_user["tokens_saved"] == prompt + completion + free


async def test_without_any_price_the_cost_saved_is_unknown(
    make_pipeline: Callable[..., tuple[Any, Any]], anyio_backend: str
) -> None:
    pipeline, _ = make_pipeline()
    async with pipeline:
        assert pipeline.cache.stats()["cost_saved_usd"] == 0.0  # nothing saved yet
        await pipeline.run(QUESTION, caller=ALICE)
        await pipeline.run(QUESTION, caller=ALICE)
        stats = pipeline.cache.stats()
    assert stats["hits"] == 1 and stats["tokens_saved"] > 0
    assert stats["cost_saved_usd"] is None and stats["unpriced_hits"] == 1


async def test_an_exporters_prices_price_the_stats(
    make_pipeline: Callable[..., tuple[Any, Any]], anyio_backend: str
) -> None:
    table = {"kind": "prometheus", "port": 0, "prices": {"*": {"input_per_1k": 1.0}}}
    pipeline, _ = make_pipeline(config=PipelineConfig(exporters=[table]))
    async with pipeline:
        await pipeline.run(QUESTION, caller=ALICE)
        await pipeline.run(QUESTION, caller=ALICE)
        prompt, _ = await _usage(pipeline, "default")
        stats = pipeline.cache.stats()
    assert stats["cost_saved_usd"] == pytest.approx(prompt / 1000)


async def test_counts_survive_a_restart_on_sqlite(
    make_pipeline: Callable[..., tuple[Any, Any]], tmp_path: Path, anyio_backend: str
) -> None:
    settings = _sqlite(tmp_path / "cache.db")
    config = _config({"*": PRICED})
    first, _ = make_pipeline(config=config, cache=settings)
    async with first:
        await first.run(QUESTION, caller=ALICE)
        await first.run(QUESTION, caller=ALICE)
        await first.run("How do I reset my password?", caller=ALICE)
        before = first.cache.stats()
    again, _ = make_pipeline(config=config, cache=settings)
    async with again:
        after = again.cache.stats()  # no lookup in this process yet
        await again.run(QUESTION, caller=ALICE)
        later = await again.cache.refresh_stats()
    assert (before["hits"], before["misses"]) == (1, 2)
    keys = ("hits", "misses", "hit_rate", "tokens_saved", "cost_saved_usd")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
    assert (later["hits"], later["misses"]) == (2, 2)
    assert later["cost_saved_usd"] == pytest.approx(2 * before["cost_saved_usd"])


class FailingStore:
    """A counter store whose writes fail (an injected fault), until fixed."""

    def __init__(self) -> None:
        self.broken = True
        self.written: dict[tuple[str, str], Any] = {}

    async def add(self, deltas: Mapping[tuple[str, str], Any]) -> dict[Any, Any]:
        from stagecache.cache._tally import Counts

        if self.broken:
            raise BackendUnavailable("counter store: disk full")
        for key, counts in deltas.items():
            self.written.setdefault(key, Counts()).add(counts)
        return dict(self.written)

    async def read(self) -> dict[Any, Any]:
        return dict(self.written)


async def test_a_failing_counter_store_never_fails_a_request(
    make_pipeline: Callable[..., tuple[Any, Any]],
    caplog: pytest.LogCaptureFixture,
    anyio_backend: str,
) -> None:
    pipeline, _ = make_pipeline()
    store = FailingStore()
    tally = pipeline.cache.engine.tally
    tally.store, tally.flush_every_s = store, 0.0  # write at every lookup
    caplog.set_level(logging.WARNING, logger="stagecache.cache")
    async with pipeline:
        first = await pipeline.run(QUESTION, caller=ALICE)
        second = await pipeline.run(QUESTION, caller=ALICE)  # its lookup writes
        third = await pipeline.run(QUESTION, caller=ALICE)
        assert (first.cache.hit, second.cache.hit, third.cache.hit) == (
            False,
            True,
            True,
        )
        # Nothing lost: the counts wait for the next write.
        assert (pipeline.cache.stats()["hits"], store.written) == (2, {})
        store.broken = False
        stats = await pipeline.cache.refresh_stats()
    assert (stats["hits"], stats["misses"]) == (2, 1)
    assert sum(c.hits for c in store.written.values()) == 2
    warned = [r.getMessage() for r in caplog.records]
    assert any("lookup counts not written" in m and "disk full" in m for m in warned)
