"""CachedEmbedder: keys, normalisation, LRU, SQLite persistence, purges, events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from emb_helpers import Counting

from stagecache.embeddings import CachedEmbedder, OnnxEmbedder, normalize_text
from stagecache.errors import InputError
from stagecache.pipeline._events import EmbeddingCacheStats, Event, EventBus

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  hello   world \n", "hello world"),
        ("tab\tand\u00a0nbsp\u2003em", "tab and nbsp em"),
        ("cafe\u0301", "caf\u00e9"),  # NFD -> NFC
        ("Keep Case", "Keep Case"),
    ],
)
def test_normalisation_rules(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_casefold_is_opt_in() -> None:
    assert normalize_text("Straße  HELLO", casefold=True) == "strasse hello"


async def test_second_call_hits_and_returns_the_same_vectors(
    onnx_int8: OnnxEmbedder,
) -> None:
    inner = Counting(onnx_int8)
    cache = CachedEmbedder(inner)
    first = await cache.embed(["reset password", "refund policy"])
    second = await cache.embed(["refund policy", "reset password"])
    np.testing.assert_array_equal(first[::-1], second)
    assert len(inner.batches) == 1
    assert (cache.stats.hits, cache.stats.misses) == (2, 2)
    assert cache.model_id == onnx_int8.model_id and cache.dim == onnx_int8.dim


async def test_misses_of_one_call_are_deduplicated_into_one_batch(
    onnx_int8: OnnxEmbedder,
) -> None:
    inner = Counting(onnx_int8)
    cache = CachedEmbedder(inner)
    await cache.embed(["known"])
    out = await cache.embed(["a  b", "known", "a b", " a b ", "c"])
    assert inner.batches == [["known"], ["a b", "c"]]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])


async def test_spellings_that_normalise_alike_share_a_row(
    onnx_int8: OnnxEmbedder,
) -> None:
    inner = Counting(onnx_int8)
    cache = CachedEmbedder(inner)
    await cache.embed(["cafe\u0301  menu"])
    await cache.embed([" caf\u00e9 menu"])
    assert len(inner.batches) == 1
    await cache.embed(["CAFÉ MENU"])  # case kept by default: a miss
    assert len(inner.batches) == 2


async def test_casefold_makes_case_variants_hit(onnx_int8: OnnxEmbedder) -> None:
    inner = Counting(onnx_int8)
    cache = CachedEmbedder(inner, casefold=True)
    await cache.embed(["Reset Password"])
    await cache.embed(["RESET password"])
    assert len(inner.batches) == 1


async def test_invalid_input_is_rejected_before_the_cache(
    onnx_int8: OnnxEmbedder,
) -> None:
    cache = CachedEmbedder(onnx_int8)
    with pytest.raises(InputError):
        await cache.embed(["ok", " \n "])


async def test_rows_survive_a_restart_in_sqlite(
    onnx_int8: OnnxEmbedder, tmp_path: Path
) -> None:
    path = tmp_path / "emb.sqlite3"
    async with CachedEmbedder(onnx_int8, path=path) as cache:
        first = await cache.embed(["persist me", "and me"])
    inner = Counting(onnx_int8)
    async with CachedEmbedder(inner, path=path) as cache:
        again = await cache.embed(["persist me", "and me"])
        assert cache.stats.disk_hits == 2
    assert inner.batches == []
    np.testing.assert_array_equal(first, again)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        model_id, dim, created = conn.execute(
            "SELECT model_id, dim, created_at FROM vectors LIMIT 1"
        ).fetchone()
    assert (model_id, dim) == (onnx_int8.model_id, 384) and created > 0


async def test_other_model_or_version_never_sees_old_rows(
    onnx_int8: OnnxEmbedder, onnx_fp32: OnnxEmbedder, tmp_path: Path
) -> None:
    path = tmp_path / "emb.sqlite3"
    async with CachedEmbedder(onnx_int8, path=path) as cache:
        await cache.embed(["shared text"])
    other_model = Counting(onnx_fp32)
    async with CachedEmbedder(other_model, path=path) as cache:
        await cache.embed(["shared text"])
    assert len(other_model.batches) == 1
    bumped = Counting(onnx_int8)
    async with CachedEmbedder(bumped, path=path, version=2) as cache:
        await cache.embed(["shared text"])
    assert len(bumped.batches) == 1


async def test_lru_keeps_only_memory_items(onnx_int8: OnnxEmbedder) -> None:
    inner = Counting(onnx_int8)
    cache = CachedEmbedder(inner, memory_items=2)
    await cache.embed(["one", "two", "three"])
    await cache.embed(["three"])
    assert len(inner.batches) == 1
    await cache.embed(["one"])  # evicted: computed again
    assert inner.batches[-1] == ["one"]


async def test_returned_rows_are_copies(onnx_int8: OnnxEmbedder) -> None:
    cache = CachedEmbedder(onnx_int8)
    out = await cache.embed(["mutable"])
    out[:] = 0
    again = await cache.embed(["mutable"])
    assert float(np.linalg.norm(again)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("persistent", [False, True])
async def test_purge_sources_removes_rows_tied_to_a_user(
    onnx_int8: OnnxEmbedder, tmp_path: Path, persistent: bool
) -> None:
    path = tmp_path / "emb.sqlite3" if persistent else None
    inner = Counting(onnx_int8)
    async with CachedEmbedder(inner, path=path) as cache:
        await cache.embed(["alice text", "common text"], sources=["user:alice"])
        await cache.embed(["bob text"], sources=["user:bob"])
        await cache.embed(["common text"], sources=["user:bob"])  # hit, now bob's too
        assert await cache.purge_sources("user:bob") == 2
        assert await cache.purge_sources("user:bob") == 0
        calls = len(inner.batches)
        await cache.embed(["alice text"])
        assert len(inner.batches) == calls  # alice's own row is still there
        await cache.embed(["bob text"])
        assert len(inner.batches) == calls + 1
    if persistent:
        with sqlite3.connect(tmp_path / "emb.sqlite3") as conn:
            rows = conn.execute("SELECT COUNT(*) FROM vector_sources").fetchone()[0]
        assert rows == 1  # alice's one remaining row


async def test_purge_reaches_rows_only_on_disk(
    onnx_int8: OnnxEmbedder, tmp_path: Path
) -> None:
    path = tmp_path / "emb.sqlite3"
    async with CachedEmbedder(onnx_int8, path=path) as cache:
        await cache.embed(["on disk"], sources=["user:carol"])
    async with CachedEmbedder(onnx_int8, path=path) as cache:
        assert await cache.purge_sources("user:carol") == 1


async def test_stats_events_are_published(onnx_int8: OnnxEmbedder) -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    cache = CachedEmbedder(onnx_int8, events=bus)
    await cache.embed(["x1", "x2"])
    await cache.embed(["x1"])
    assert [(e.hits, e.misses) for e in seen if isinstance(e, EmbeddingCacheStats)] == [
        (0, 2),
        (1, 0),
    ]
