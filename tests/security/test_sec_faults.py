"""Faults (issue 13, finding 8): a full disk, a failed recency update and a failed
single-flight leader degrade the cache, never the service.

The full-disk tests run in a subprocess (``full_disk_worker.py``) under
``RLIMIT_FSIZE = 0``: every write to a regular file fails there, for SQLite, numpy
and the model copy alike, as on a full disk. The others inject the fault in-process:
a backend whose ``touch`` always raises, a write that runs out of space, a model
call that fails.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import stagecache
from stagecache.cache import (
    BackendSettings,
    CacheSettings,
    Change,
    Entry,
    KeyParts,
    SemanticCache,
)
from stagecache.cache._flight import SingleFlight
from stagecache.cache._index import FlatIndex
from stagecache.cache._persist import load_index, save_index
from stagecache.config import DEFAULT_STAGES, PipelineConfig, build
from stagecache.errors import BackendUnavailable, StageError
from stagecache.exporters import MetricsRecorder
from stagecache.pipeline._events import CacheError
from stagecache.testing import ScriptedLLM, capture_events

WORKER = str(Path(__file__).with_name("full_disk_worker.py"))
QUESTION = "What is the refund policy?"


def worker(mode: str, root: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, WORKER, mode, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    reports = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")]
    assert proc.returncode == 0 and reports, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(reports[-1][len("REPORT ") :])
    assert "crash" not in report, report
    return report


# -- a full disk -------------------------------------------------------------------


def test_start_on_a_full_disk_is_degraded_not_dead(tmp_path: Path) -> None:
    # Was: Pipeline.__aenter__ raised (the app could not start).
    report = worker("start", tmp_path)
    assert "start_error" not in report, report
    results = report["results"]
    assert len(results) == 24 and all(r["answered"] for r in results)
    assert {r["status"] for r in results} == {"error"}  # the cache is off, said so
    assert ["warm_up", "BackendUnavailable"] in report["events"]
    logged = [
        r
        for r in report["logs"]
        if r["logger"].startswith("stagecache") and r["level"] == "WARNING"
    ]
    assert any(
        "warm_up" in r["msg"] and "BackendUnavailable" in r["msg"] for r in logged
    )


def test_default_model_is_found_on_a_full_disk(tmp_path: Path) -> None:
    # Was: copying the packaged model into a fresh cache dir raised shutil.Error.
    report = worker("model", tmp_path)
    assert "error" not in report, report
    assert report["config"] is True  # loadable from the package, in place
    assert report["left"] == []  # no half copy left behind


def test_lookups_on_a_full_disk_write_no_index_file_and_never_error(
    tmp_path: Path,
) -> None:
    # Was: lookups saved unloaded scopes (and their touch failed): most errored.
    report = worker("lookups", tmp_path)
    assert report["stored"] == 24
    results = report["results"]
    assert len(results) == 72
    assert sum(r["status"] == "error" for r in results) == 0  # 0 lookups errored
    assert all(r["status"] == "hit" and r["answered"] for r in results)
    assert report["model_calls"] == 0
    # The recency updates failed (the disk is full): reported, not fatal.
    assert all(any(e.startswith("cache.touch:") for e in r["errors"]) for r in results)
    assert report["tmp_files"] == []


@pytest.mark.anyio
async def test_lookups_write_no_index_file_with_scopes_unloaded_to_disk(
    tmp_path: Path,
) -> None:
    # The memory backend keeps no vectors: there the saved file is the only copy of
    # a cold scope, the case where a lookup used to save (and fail on a full disk).
    def written() -> dict[str, tuple[int, int]]:
        return {
            p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir()
        }

    settings = CacheSettings(index_dir=str(tmp_path), max_hot_scopes=2, threshold=0.99)
    vectors = np.random.default_rng(1).standard_normal((6, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    parts = KeyParts("m", "i", "c")
    async with SemanticCache(settings) as cache:
        scopes = [cache.scope_for(stagecache.Caller(user_id=f"u{i}")) for i in range(6)]
        ids = []
        for i, scope in enumerate(scopes):
            assert not isinstance(scope, str)
            ids.append(await cache.store(scope, f"q{i}", vectors[i], parts, f"a{i}"))
        assert cache.stats()["cold_scopes"] == 4
        before = written()
        for _ in range(3):
            for i, scope in enumerate(scopes):
                assert not isinstance(scope, str)
                found = await cache.lookup(scope, vectors[i], parts, f"q{i}")
                assert found.hit is not None and found.hit.entry_id == ids[i]
                assert cache.stats()["hot_scopes"] <= 3  # max_hot_scopes + 1
        # 18 lookups over 6 scopes, 2 hot: no file written or changed.
        after = written()
        assert {k: v for k, v in after.items() if before.get(k) != v} == {}
        await cache.store(scopes[0], "q-new", vectors[0] * -1, parts, "new")  # type: ignore[arg-type]
        assert cache.stats()["hot_scopes"] <= 2  # the next store unloads


@pytest.mark.anyio
async def test_lookups_applying_other_workers_changes_write_no_index_file(
    tmp_path: Path,
) -> None:
    # A shared backend (redis) hands a worker the writes of the others; a lookup
    # applies them first. That must not save the scopes it pushes out either.
    db = BackendSettings(kind="sqlite", path=str(tmp_path / "cache.db"))
    reader_dir = tmp_path / "reader-idx"
    vectors = np.random.default_rng(2).standard_normal((4, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    parts = KeyParts("m", "i", "c")
    writer = SemanticCache(CacheSettings(backend=db, threshold=0.99))
    reader = SemanticCache(
        CacheSettings(
            backend=db, threshold=0.99, index_dir=str(reader_dir), max_hot_scopes=1
        )
    )
    async with writer, reader:
        scopes = [
            writer.scope_for(stagecache.Caller(user_id=f"u{i}")) for i in range(4)
        ]
        for i, scope in enumerate(scopes):
            assert not isinstance(scope, str)
            entry_id = await writer.store(scope, f"q{i}", vectors[i], parts, f"a{i}")
            assert entry_id is not None
            entry = (await writer.backend.get_many([entry_id]))[entry_id]
            reader._changes.append(Change(kind="put", entry=entry))  # as redis would
        for _ in range(2):
            for i, scope in enumerate(scopes):
                assert not isinstance(scope, str)
                found = await reader.lookup(scope, vectors[i], parts, f"q{i}")
                assert found.hit is not None and found.hit.answer == f"a{i}"
                assert reader.stats()["hot_scopes"] <= 2
        assert not reader_dir.exists() or list(reader_dir.iterdir()) == []


def test_hnsw_graph_cut_short_by_a_full_disk_is_not_saved(tmp_path: Path) -> None:
    # hnswlib ignores write errors: it used to leave a truncated graph that the
    # manifest's checksum then vouched for (on the memory backend, the only copy).
    report = worker("hnsw", tmp_path)
    assert report["raised"] == "OSError"
    assert report["files"] == []


class _DiskFull:
    """Creates the file, then fails the write: what a full disk does."""

    def __init__(self) -> None:
        self.calls = 0

    def error(self) -> OSError:
        self.calls += 1
        return OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing", ["data", "manifest"])
def test_failed_index_save_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # Was: a 0-byte .json.tmp (or a partial .npy.tmp) stayed behind.
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FlatIndex(8)
    index.add([f"e{i}" for i in range(5)], vectors)
    full = _DiskFull()
    if failing == "data":

        def save(fh: Any, array: Any, **kw: Any) -> None:
            raise full.error()

        monkeypatch.setattr("stagecache.cache._persist.np.save", save)
    else:
        real = Path.write_bytes

        def write_bytes(self: Path, data: Any) -> int:
            if self.name.endswith(".json.tmp"):
                real(self, b"")
                raise full.error()
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError):
        save_index(str(tmp_path), "scope-a", index, 8)
    assert full.calls == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert load_index(str(tmp_path), "scope-a", 8, expect=None, ef=16) is None


# -- a failed recency update ---------------------------------------------------------


class TouchFails:
    """A real backend whose ``touch`` always fails (a full disk under SQLite)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.stores_vectors = inner.stores_vectors
        self.touches = 0

    async def touch(self, entry_id: str, **counters: Any) -> None:
        self.touches += 1
        raise BackendUnavailable("injected: database or disk is full")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = await self.inner.get_many(entry_ids)
        return found


@pytest.mark.anyio
async def test_failed_recency_update_never_costs_a_hit(
    tmp_path: Path, embedder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Was: "touch failed" turned 90 of 91 would-be hits into cache errors.
    llm = ScriptedLLM(lambda p: f"answer to: {p}")
    cache = CacheSettings(
        backend=BackendSettings(kind="sqlite", path=str(tmp_path / "cache.db"))
    )
    pipeline = build(llm=llm, embedder=embedder, cache=cache)
    engine = pipeline.cache.engine
    faulty = TouchFails(engine._backend)
    engine._backend = faulty
    users = [stagecache.Caller(user_id=f"user-{i}") for i in range(10)]
    reader = InMemoryMetricReader()
    pipeline.events.subscribe(MetricsRecorder(MeterProvider(metric_readers=[reader])))
    async with pipeline:
        for caller in users:
            await pipeline.run(QUESTION, caller=caller)
        calls = llm.calls
        with (
            capture_events(pipeline.events) as seen,
            caplog.at_level(logging.WARNING, logger="stagecache"),
        ):
            results = [await pipeline.run(QUESTION, caller=c) for c in users]
    assert faulty.touches == 10
    assert [r.cache.status for r in results] == ["hit"] * 10  # every would-be hit
    assert all(r.answer == f"answer to: {QUESTION}" for r in results)
    assert llm.calls == calls
    assert all(any(e.startswith("cache.touch:") for e in r.errors) for r in results)
    touch_errors = [e for e in seen.of(CacheError) if e.operation == "touch"]  # type: ignore[attr-defined]
    assert len(touch_errors) == 10
    assert "recency update failed" in caplog.text
    # Counted as cache errors of the touch, and not as failed lookups.
    assert (
        _count(reader, "stagecache.cache.errors", **{"cache.operation": "touch"}) == 10
    )
    assert _count(reader, "stagecache.cache.lookups", **{"cache.result": "hit"}) == 10
    assert _count(reader, "stagecache.cache.lookups", **{"cache.result": "error"}) == 0


def _count(reader: InMemoryMetricReader, name: str, **labels: str) -> float:
    data = reader.get_metrics_data()
    assert data is not None
    return sum(
        p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
        if set(labels.items()) <= set(p.attributes.items())
    )


@pytest.mark.anyio
async def test_hung_recency_update_is_cut_off_and_the_hit_served(embedder: Any) -> None:
    class Hangs(TouchFails):
        async def touch(self, entry_id: str, **counters: Any) -> None:
            self.touches += 1
            await anyio.sleep_forever()

    pipeline = build(
        llm=ScriptedLLM(lambda p: "a"),
        embedder=embedder,
        cache=CacheSettings(timeout_s=0.3),
    )
    engine = pipeline.cache.engine
    engine._backend = Hangs(engine._backend)
    alice = stagecache.Caller(user_id="alice")
    async with pipeline:
        await pipeline.run(QUESTION, caller=alice)
        with anyio.fail_after(10):
            again = await pipeline.run(QUESTION, caller=alice)
    assert again.cache.status == "hit"
    assert any(e.startswith("cache.touch: TimeoutError") for e in again.errors)


# -- a failed single-flight leader -------------------------------------------------


@pytest.mark.anyio
async def test_failed_single_flight_leader_is_taken_over_by_one_follower(
    embedder: Any,
) -> None:
    # Was: when the leader's model call failed, all 49 followers called the model.
    failures = [0]

    def answer(prompt: str) -> str:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("injected: upstream reset")
        return f"answer to: {prompt}"

    llm = ScriptedLLM(answer, delay_s=0.3)
    # The followers wait inside the cache_check stage: give it room on a busy CI
    # machine (50 embeddings, two model calls), so only the flight logic is tested.
    config = PipelineConfig(
        stages=[
            {"kind": k, **({"timeout_s": 30.0} if k == "cache_check" else {})}
            for k in DEFAULT_STAGES
        ]
    )
    pipeline = build(config, llm=llm, embedder=embedder)
    alice = stagecache.Caller(user_id="alice")
    outcomes: list[Any] = []

    async def one() -> None:
        try:
            outcomes.append(await pipeline.run(QUESTION, caller=alice))
        except StageError as exc:
            outcomes.append(exc)

    async with pipeline:
        await pipeline.run("warm the model up", caller=stagecache.Caller(user_id="x"))
        llm.calls, failures[0] = 0, 1  # the leader's call fails
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
    assert llm.calls == 2  # the leader's failed call, then one follower's
    failed = [o for o in outcomes if isinstance(o, StageError)]
    served = [o for o in outcomes if not isinstance(o, StageError)]
    assert len(failed) == 1 and len(served) == 49
    assert all(r.answer == f"answer to: {QUESTION}" for r in served)
    statuses = sorted(r.cache.status for r in served)
    assert statuses == ["hit"] * 48 + ["miss"]
    assert pipeline.cache.stats()["flights"] == 0


@pytest.mark.anyio
async def test_single_flight_hands_over_to_one_follower_at_a_time() -> None:
    flights = SingleFlight()
    key = ("scope", "q")
    leading = 0
    most = 0
    order: list[int] = []

    async def request(i: int) -> None:
        nonlocal leading, most
        flight = await flights.acquire(key, wait_s=30)
        if not flight.leader:
            return
        leading += 1
        most = max(most, leading)
        order.append(i)
        await anyio.sleep(0.01)
        leading -= 1
        flight.release(failed=len(order) <= 3)  # the first three leaders fail

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(request, i)
            await anyio.lowlevel.checkpoint()
    assert most == 1  # never two leaders at once
    assert len(order) == 4  # three failed leaders, then one that succeeded
    assert len(flights) == 0


@pytest.mark.anyio
async def test_single_flight_forgets_a_key_whose_followers_all_left() -> None:
    flights = SingleFlight()
    key = ("scope", "q")
    leader = await flights.acquire(key, wait_s=30)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(flights.acquire, key, wait_s=30))
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()  # the follower gives up (its request timed out)
    leader.release(failed=True)
    assert len(flights) == 0
    again = await flights.acquire(key, wait_s=0.01)
    assert again.leader
    again.release()


@pytest.mark.anyio
async def test_follower_whose_wait_runs_out_goes_on_as_a_miss() -> None:
    flights = SingleFlight()
    key = ("scope", "q")
    leader = await flights.acquire(key, wait_s=30)
    with anyio.fail_after(5):
        follower = await flights.acquire(key, wait_s=0.05)
    assert not follower.leader and follower.waited
    leader.release(failed=True)
    assert len(flights) == 0


@pytest.mark.anyio
async def test_engine_flight_released_by_a_raising_block_hands_over(
    embedder: Any,
) -> None:
    async with SemanticCache(CacheSettings()) as cache:
        scope = cache.scope_for(stagecache.Caller(user_id="alice"))
        assert not isinstance(scope, str)
        parts = KeyParts("m", "i", "c")
        first = await cache.single_flight(scope, QUESTION, parts)
        took: list[bool] = []

        async def follow() -> None:
            flight = await cache.single_flight(scope, QUESTION, parts)
            took.append(flight.took_over)
            flight.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            tg.start_soon(follow)
            await anyio.sleep(0.01)
            with pytest.raises(RuntimeError):
                async with first:
                    raise RuntimeError("the model call failed")
        assert sorted(took) == [False, True]
