"""MicroBatcher: coalescing, per-caller rows, errors and cancellation."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest

from stagecache.embeddings import MicroBatcher, OnnxEmbedder
from stagecache.types import Vectors

pytestmark = pytest.mark.anyio


def _rows(texts: list[str]) -> Vectors:
    # Row i encodes its own text, so each caller can check it got its rows.
    return np.array([[float(len(t)), float(hash(t) % 1000)] for t in texts], np.float32)


class _Recorder:
    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.fail = fail
        self.gate = gate
        self.started = threading.Event()  # set when a call begins

    def __call__(self, texts: list[str]) -> Vectors:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.sizes.append(len(texts))
        if self.fail:
            raise RuntimeError("model exploded")
        return _rows(texts)


async def test_concurrent_callers_share_fewer_model_calls() -> None:
    fn = _Recorder()
    batcher = MicroBatcher(fn, window_ms=20, max_batch=64)
    results: dict[int, Vectors] = {}

    async def call(i: int) -> None:
        results[i] = await batcher([f"text {i}"])

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(call, i)
    assert batcher.calls == len(fn.sizes) < 64
    assert sum(fn.sizes) == 64
    for i in range(64):
        np.testing.assert_array_equal(results[i], _rows([f"text {i}"]))


async def test_real_model_64_callers_get_their_own_rows(
    onnx_int8: OnnxEmbedder,
) -> None:
    texts = [f"question number {i} about refunds" for i in range(64)]
    expected = await onnx_int8.embed(texts)
    calls_before = onnx_int8.batcher.calls
    got: dict[int, Vectors] = {}

    async def call(i: int) -> None:
        got[i] = await onnx_int8.embed([texts[i]])

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(call, i)
    assert onnx_int8.batcher.calls - calls_before < 64
    for i in range(64):
        # int8 kernels can differ by padding length: compare by cosine.
        assert float(got[i][0] @ expected[i]) > 0.999


async def test_batches_never_exceed_max_batch() -> None:
    fn = _Recorder()
    batcher = MicroBatcher(fn, window_ms=20, max_batch=8)

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(batcher, [f"t{i}", f"u{i}", f"v{i}"])
    assert max(fn.sizes) <= 8
    assert sum(fn.sizes) == 90


async def test_large_request_is_split_and_reassembled() -> None:
    fn = _Recorder()
    batcher = MicroBatcher(fn, window_ms=0, max_batch=10)
    texts = [f"text {i}" for i in range(25)]
    out = await batcher(texts)
    assert fn.sizes == [10, 10, 5]
    np.testing.assert_array_equal(out, _rows(texts))


async def test_error_reaches_every_caller_of_the_batch() -> None:
    batcher = MicroBatcher(_Recorder(fail=True), window_ms=20, max_batch=64)
    errors: list[BaseException] = []

    async def call(i: int) -> None:
        try:
            await batcher([f"t{i}"])
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(call, i)
    assert len(errors) == 10
    assert all("model exploded" in str(e) for e in errors)


async def test_cancelled_waiter_does_not_break_the_others() -> None:
    gate = threading.Event()
    fn = _Recorder(gate=gate)
    # A long window and max_batch = 6: the leader holds its batch until all six
    # callers below have joined, however slowly the machine schedules them.
    batcher = MicroBatcher(fn, window_ms=60_000, max_batch=6)
    results: dict[int, Vectors] = {}
    cancelled: list[int] = []
    follower_out = anyio.Event()

    async def call(i: int, scope_box: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            results[i] = await batcher([f"t{i}"])
        if scope.cancelled_caught:
            cancelled.append(i)
        if i == 3:
            follower_out.set()

    # Prime the adaptive window: after a batch of several texts, the next leader
    # holds its batch open.
    gate.set()
    await batcher(["warm a", "warm b"])
    gate.clear()
    fn.sizes.clear()
    fn.started.clear()

    scopes: dict[int, list[anyio.CancelScope]] = {i: [] for i in range(6)}
    async with anyio.create_task_group() as tg:
        # Task 0 must be the leader: trio runs newly started tasks in no fixed
        # order, so the others start only once it has opened the batch.
        tg.start_soon(call, 0, scopes[0])
        await anyio.wait_all_tasks_blocked()  # it waits in its open batch
        for i in range(1, 6):
            tg.start_soon(call, i, scopes[i])
        # all six joined and the model call began (it waits on gate)
        assert await anyio.to_thread.run_sync(fn.started.wait, 10)
        scopes[0][0].cancel()  # the leader
        scopes[3][0].cancel()  # a follower
        # The follower stops waiting while the model call is still running (a
        # fixed sleep here was not always enough on a loaded machine).
        with anyio.fail_after(10):
            await follower_out.wait()
        gate.set()
    assert fn.sizes == [6]
    assert 3 in cancelled
    for i in (1, 2, 4, 5):
        np.testing.assert_array_equal(results[i], _rows([f"t{i}"]))
    assert 3 not in results


async def test_batcher_keeps_working_after_an_error() -> None:
    fn = _Recorder(fail=True)
    batcher = MicroBatcher(fn, window_ms=0)
    with pytest.raises(RuntimeError):
        await batcher(["a"])
    fn.fail = False
    np.testing.assert_array_equal(await batcher(["a"]), _rows(["a"]))


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(_Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="window_ms"):
        MicroBatcher(_Recorder(), window_ms=-1)


async def test_a_lone_caller_never_waits_for_the_window() -> None:
    fn = _Recorder()
    batcher = MicroBatcher(fn, window_ms=60_000, max_batch=64)
    # One caller at a time: each batch holds one text, so no batch is held open for
    # company (a 60 s window would trip the 10 s limit below).
    with anyio.fail_after(10):
        for i in range(3):
            await batcher([f"text {i}"])
    assert fn.sizes == [1, 1, 1]
