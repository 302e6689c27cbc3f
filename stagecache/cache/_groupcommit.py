"""Group commit: concurrent writes queue up and the next writer commits them at once.

Every store used to hold the engine's write lock for its own backend write, so a
burst of 1,000 stores queued one behind the other, and the callers' timeouts (which
count the queueing) abandoned healthy stores (finding F6 in docs/reliability.md).
Here a store joins a queue instead. One task at a time is the *writer*: it takes
the write lock, takes every request queued at that moment (a batch), commits the
batch in one shielded call and hands the writer role to the first request queued
meanwhile. A caller waits at most for the batch in flight plus its own.

Each request gets its own outcome: the commit function returns one result or one
exception per request, and a caller re-raises a copy of its exception (the type is
kept, the original is the ``__cause__``). A caller cancelled while queued leaves
the queue (nothing of it is written); a caller cancelled once its batch is taken
leaves the batch alone, which completes for the others.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

__all__ = ["GroupCommit"]

W = TypeVar("W")
R = TypeVar("R")


class _Request(Generic[W, R]):
    __slots__ = ("done", "error", "result", "taken", "wake", "work")

    def __init__(self, work: W) -> None:
        self.work = work
        self.taken = False  # in a batch: it completes whatever the caller does
        self.wake = anyio.Event()  # finished, or made the writer
        self.done = anyio.Event()  # finished (or left the queue)
        self.result: R | None = None
        self.error: BaseException | None = None

    def outcome(self) -> R:
        error = self.error
        if error is not None:
            clone = _copy(error)
            if clone is error:
                raise error
            raise clone from error
        return self.result  # type: ignore[return-value]


class GroupCommit(Generic[W, R]):
    """A queue of writes committed in batches by one writer at a time.

    Args:
        commit: writes a batch; returns one result or exception per work, in
            order. Called with ``lock`` held, inside a shielded cancel scope.
        lock: the lock every writer of the underlying state holds.
    """

    __slots__ = ("_commit", "_inflight", "_lock", "_queue", "_writer", "batches")

    def __init__(
        self,
        commit: Callable[[list[W]], Awaitable[Sequence[R | BaseException]]],
        lock: Callable[[], anyio.Lock],
    ) -> None:
        self._commit = commit
        self._lock = lock
        self._queue: list[_Request[W, R]] = []
        self._inflight: list[_Request[W, R]] = []
        self._writer: _Request[W, R] | None = None
        self.batches = 0  # batches committed (telemetry and tests)

    def __len__(self) -> int:
        """Requests queued or in flight."""
        return len(self._queue) + len(self._inflight)

    async def submit(self, work: W) -> R:
        """Queue ``work``; return its result once a batch holding it is committed."""
        req: _Request[W, R] = _Request(work)
        self._queue.append(req)
        try:
            if self._writer is None:
                self._writer = req
            else:
                await req.wake.wait()
                if req.done.is_set():
                    return req.outcome()
            lock = self._lock()
            try:
                lock.acquire_nowait()  # no trip round a busy loop when it is free
            except anyio.WouldBlock:
                await lock.acquire()
            try:
                batch = self._take()
                with anyio.CancelScope(shield=True):
                    await self._run(batch)
            finally:
                lock.release()
        except BaseException:
            self._leave(req)
            raise
        return req.outcome()

    async def settle(self) -> None:
        """Wait until every write queued or in flight now has completed."""
        for req in [*self._inflight, *self._queue]:
            await req.done.wait()

    def _take(self) -> list[_Request[W, R]]:
        batch, self._queue = self._queue, []
        for req in batch:
            req.taken = True
        self._inflight = batch
        return batch

    async def _run(self, batch: list[_Request[W, R]]) -> None:
        try:
            outcomes = await self._commit([req.work for req in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError("group commit: one outcome per request expected")
            for req, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    req.error = outcome
                else:
                    req.result = outcome
        except Exception as exc:  # a bug or an untranslated error: fail them all
            for req in batch:
                req.error = exc
        finally:
            self.batches += 1
            self._inflight = []
            for req in batch:
                req.done.set()
                req.wake.set()
            self._writer = None
            self._next_writer()

    def _leave(self, req: _Request[W, R]) -> None:
        """The caller of ``req`` is gone (cancelled, or its batch raised)."""
        if req.taken:
            return  # the batch completes (or completed) without the caller
        if req in self._queue:
            self._queue.remove(req)
        req.done.set()
        if self._writer is req:
            self._writer = None
            self._next_writer()

    def _next_writer(self) -> None:
        if self._writer is None and self._queue:
            self._writer = self._queue[0]
            self._writer.wake.set()


def _copy(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one caller: callers never share one traceback."""
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    if type(clone) is not type(exc):
        return exc
    clone.__traceback__ = None
    return clone
