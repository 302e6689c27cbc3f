"""The redis backend's write-behind of hits: LRU times and counters off the hit path.

A hit queues its entry's new ``last_used`` and counters (:meth:`Touches.add`); a
background task (:meth:`Touches.run`) gathers the touches of a burst of hits and
hands them to the backend in one batch. Counters become increments relative to
what this worker last read of the entry (:meth:`Touches.seen`), so hits on
several workers add up instead of overwriting each other. A batch being written
when the worker closes is waited for, not cancelled (:meth:`Touches.stop`): its
touches have already left the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from stagecache.cache._backend import Entry
from stagecache.errors import CacheError

__all__ = ["SEEN_MAX", "TOUCH_DELAY_S", "Touches", "stop_task"]

_log = logging.getLogger("stagecache.cache")

# Counters remembered per entry to turn absolute touches into increments.
SEEN_MAX = 65_536
# How long LRU touches wait to be written together (they never delay a request).
TOUCH_DELAY_S = 0.02

#: One queued touch: [last_used, "a" (absolute) or "d" (delta), hits, positive,
#: negative].
Touch = list[Any]
Write = Callable[[list[tuple[str, Touch]]], Awaitable[None]]


class Touches:
    """The queued LRU and counter updates of one worker.

    Args:
        write: writes one batch of ``(entry_id, touch)`` (the backend's script).
    """

    def __init__(self, write: Write) -> None:
        self._write = write
        self._seen: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._pending: dict[str, Touch] = {}
        self._wake: asyncio.Event | None = None
        self._writing: asyncio.Future[None] | None = None

    @property
    def pending(self) -> bool:
        """Whether touches wait in the queue."""
        return bool(self._pending)

    def seen(self, found: Mapping[str, Entry]) -> None:
        """Remember the counters just read, the base of the next increments."""
        seen = self._seen
        for entry_id, entry in found.items():
            seen[entry_id] = (entry.hits, entry.positive, entry.negative)
            seen.move_to_end(entry_id)
        while len(seen) > SEEN_MAX:
            seen.popitem(last=False)

    def add(
        self,
        entry_id: str,
        *,
        last_used: float,
        hits: int,
        positive: int,
        negative: int,
    ) -> None:
        """Queue one entry's new LRU time and counters (absolute values)."""
        base = self._seen.get(entry_id)
        pending = self._pending.get(entry_id)
        if base is None:
            self._pending[entry_id] = [last_used, "a", hits, positive, negative]
        else:
            delta = [hits - base[0], positive - base[1], negative - base[2]]
            if pending is None:
                self._pending[entry_id] = [last_used, "d", *delta]
            elif pending[1] == "a":
                used = max(last_used, pending[0])
                self._pending[entry_id] = [used, "a", hits, positive, negative]
            else:
                pending[0] = max(last_used, pending[0])
                for i in range(3):
                    pending[2 + i] += delta[i]
        if self._wake is not None:
            self._wake.set()

    async def flush(self) -> None:
        """Take the queue and write it now.

        Raises:
            CacheError: the write failed (the touches are dropped).
        """
        pending, self._pending = self._pending, {}
        if pending:
            await self._write(list(pending.items()))

    def start(self) -> None:
        """Arm the wake-up of :meth:`run` (call on the loop that runs it)."""
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Write the queued touches in batches until cancelled."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            # Gather the touches of a burst of hits into one write.
            await asyncio.sleep(TOUCH_DELAY_S)
            self._wake.clear()
            # The write runs as a task of its own: stopping this loop must not
            # cancel touches already taken out of the queue (see stop()).
            self._writing = asyncio.ensure_future(self._flush_logged())
            await asyncio.shield(self._writing)

    async def stop(self, bound: float) -> None:
        """Wait (at most ``bound`` seconds) for a batch being written (call after
        cancelling :meth:`run`)."""
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            await stop_task(writing, bound, cancel=False)

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except CacheError as exc:
            _log.debug("cache: LRU touches dropped: %s", exc)


async def stop_task(
    task: asyncio.Future[None], bound: float, *, cancel: bool = True
) -> None:
    """Cancel ``task`` and wait for it, at most ``bound`` seconds (with
    ``cancel=False``, wait for it to finish, then cancel it at the bound).

    The cancellation is repeated (as anyio's cancel scopes do): redis-py can lose
    one that lands while its read timeout is being armed or disarmed.
    """
    deadline = asyncio.get_running_loop().time() + bound
    while not task.done():
        if cancel:
            task.cancel()
        await asyncio.wait([task], timeout=0.05)
        if asyncio.get_running_loop().time() > deadline:
            if not cancel:
                cancel = True
                deadline += bound
                continue
            _log.warning("cache: a redis background task did not stop; abandoned")
            return
    if not task.cancelled() and task.exception() is not None:
        _log.warning("cache: redis background task failed: %r", task.exception())
