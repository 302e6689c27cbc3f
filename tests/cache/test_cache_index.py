"""Flat and hnswlib indexes, promotion, cold scopes and saved indexes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stagecache._model import Caller
from stagecache.cache import (
    CacheSettings,
    FlatIndex,
    HnswIndex,
    KeyParts,
    Scope,
    SemanticCache,
    build_index,
)

DATA = Path("/work/shared/data/qqp_pairs_val.csv")
PARTS = KeyParts("m", "i", "c")


@pytest.fixture(scope="module")
def pairs(embed_many) -> tuple[list[str], np.ndarray, np.ndarray]:
    first, second = [], []
    with DATA.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["question1"] not in first:
                first.append(row["question1"])
                second.append(row["question2"])
            if len(first) == 200:
                break
    return first, embed_many(first), embed_many(second)


def test_flat_search_is_exact_and_removal_swaps(pairs) -> None:
    texts, base, _ = pairs
    ids = [str(i) for i in range(len(texts))]
    flat = FlatIndex(base.shape[1])
    flat.add(ids, base)
    assert flat.search(base[7], 1)[0][0] == "7"
    assert flat.remove("7") and not flat.remove("7")
    assert "7" not in [i for i, _ in flat.search(base[7], 5)]
    assert len(flat) == len(texts) - 1
    assert flat.search(base[len(texts) - 1], 1)[0][0] == str(len(texts) - 1)


def test_promotion_to_hnsw_keeps_top1_identical(pairs) -> None:
    texts, base, queries = pairs
    ids = [str(i) for i in range(len(texts))]
    flat = build_index(base.shape[1], ids, base, flat_max=10_000)
    graph = build_index(base.shape[1], ids, base, flat_max=100)
    assert isinstance(flat, FlatIndex) and isinstance(graph, HnswIndex)
    for q in queries:
        (fid, fsim), (gid, gsim) = flat.search(q, 1)[0], graph.search(q, 1)[0]
        assert fid == gid
        assert abs(fsim - gsim) < 1e-4


def test_hnsw_remove_and_grow(pairs) -> None:
    _, base, _ = pairs
    graph = HnswIndex(base.shape[1], capacity=16)
    graph.add([str(i) for i in range(len(base))], base)  # grows past 1024? no: resize
    assert len(graph) == len(base)
    assert graph.remove("3")
    assert graph.search(base[3], 1)[0][0] != "3"
    ids, vectors = graph.export()
    assert "3" not in ids and vectors.shape == (len(base) - 1, base.shape[1])


@pytest.mark.anyio
async def test_engine_promotes_and_still_hits(pairs) -> None:
    texts, base, _ = pairs
    settings = CacheSettings(flat_max_entries=50, threshold=0.99)
    async with SemanticCache(settings) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        ids = [
            await cache.store(scope, t, v, PARTS, t)
            for t, v in zip(texts[:80], base[:80], strict=True)
        ]
        assert cache.stats()["hnsw_scopes"] == 1
        for i in (0, 49, 79):
            found = await cache.lookup(scope, base[i], PARTS, texts[i])
            assert found.hit is not None and found.hit.entry_id == ids[i]


@pytest.mark.anyio
async def test_cold_scope_unloads_to_disk_and_reloads(pairs, tmp_path) -> None:
    texts, base, _ = pairs
    settings = CacheSettings(max_hot_scopes=1, index_dir=str(tmp_path), threshold=0.99)
    async with SemanticCache(settings) as cache:
        scopes = [cache.scope_for(Caller(user_id=u)) for u in ("alice", "bob")]
        assert all(isinstance(s, Scope) for s in scopes)
        alice, bob = scopes[0], scopes[1]
        assert isinstance(alice, Scope) and isinstance(bob, Scope)
        a = await cache.store(alice, texts[0], base[0], PARTS, "a")
        assert not list(tmp_path.iterdir())
        await cache.store(bob, texts[1], base[1], PARTS, "b")
        stats = cache.stats()
        assert (stats["hot_scopes"], stats["cold_scopes"]) == (1, 1)
        assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]
        found = await cache.lookup(alice, base[0], PARTS, texts[0])
        assert found.hit is not None and found.hit.entry_id == a
        # A lookup writes no index file: bob (changed since it was loaded) stays
        # hot until the next store unloads it.
        assert cache.stats()["cold_scopes"] == 0
        await cache.store(alice, texts[2], base[2], PARTS, "c")
        assert cache.stats()["cold_scopes"] == 1  # bob went cold in turn
        assert await cache.purge_user("bob") == 1
        from stagecache.cache._persist import file_base

        names = {p.name for p in tmp_path.iterdir()}
        assert not any(n.startswith(file_base(".", bob.key).name) for n in names)


@pytest.mark.anyio
async def test_sqlite_warm_up_loads_saved_hnsw_index(pairs, tmp_path) -> None:
    from stagecache.cache import SqliteBackend

    texts, base, _ = pairs
    settings = CacheSettings(flat_max_entries=50, index_dir=str(tmp_path / "idx"))
    db = tmp_path / "c.db"
    async with SemanticCache(settings, backend=SqliteBackend(db)) as cache:
        scope = cache.scope_for(Caller(user_id="alice"))
        assert isinstance(scope, Scope)
        for t, v in zip(texts[:80], base[:80], strict=True):
            await cache.store(scope, t, v, PARTS, t)
    assert any(p.suffix == ".hnsw" for p in (tmp_path / "idx").iterdir())
    async with SemanticCache(settings, backend=SqliteBackend(db)) as cache:
        assert cache.stats()["hnsw_scopes"] == 1 and cache.stats()["entries"] == 80
        found = await cache.lookup(scope, base[5], PARTS, texts[5])
        assert found.hit is not None and found.hit.answer == texts[5]
