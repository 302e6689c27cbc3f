"""Single flight: N identical concurrent misses make one model call and one store.

The first request for a key becomes the *leader* and holds a flight until it has
stored its answer (or failed). Requests for the same key that arrive meanwhile are
*followers*: they wait for the leader's flight to end (at most ``wait_s`` in all),
then look the cache up again, which now hits.

A leader that ends without an answer (its model call failed, timed out or was
cancelled) releases with ``failed=True``: then exactly one follower *takes over*
(it becomes the leader and calls the model) and the others go on waiting for it,
so a failed model call costs one more call, not one per follower. A follower whose
wait runs out goes on as an ordinary miss, so a stuck leader delays it by
``wait_s`` at most and never deadlocks it. A leader that succeeded without storing
(an answer not cacheable) wakes every follower: they go on as ordinary misses.

A flight is released explicitly (``release()``, idempotent) or by ``async with``
(failed when the block raised); it may be released by another task than the one
that acquired it, so the cache stage can acquire in the cache-check stage and
release when the turn ends. The key map drops a key as soon as no one leads or
waits for it, so it never grows past the number of requests in flight.
"""

from __future__ import annotations

import math
from types import TracebackType

import anyio

__all__ = ["Flight", "SingleFlight"]


class _Slot:
    """One key in flight: the event its current leader sets, and who waits."""

    __slots__ = ("done", "handoff", "waiting")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.waiting = 0  # followers inside ``acquire``
        self.handoff = False  # the leader failed: the next follower leads


class Flight:
    """One request's place in a flight.

    Attributes:
        leader: True for the request that should call the model and store.
        waited: True when this request waited for a leader.
        took_over: True for a follower that became the leader after the
            previous leader failed.
    """

    __slots__ = ("_key", "_owner", "_slot", "leader", "took_over", "waited")

    def __init__(
        self, owner: SingleFlight, key: tuple[str, ...], slot: _Slot | None
    ) -> None:
        self._owner = owner
        self._key = key
        self._slot = slot
        self.leader = slot is not None
        self.waited = False
        self.took_over = False

    def release(self, failed: bool = False) -> None:
        """End the flight (leader: wake the followers). Idempotent.

        Args:
            failed: the leader has no answer (its model call failed): one waiting
                follower takes over instead of all of them calling the model.
        """
        slot, self._slot = self._slot, None
        if slot is not None:
            self._owner._end(self._key, slot, failed=failed)

    async def __aenter__(self) -> Flight:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(failed=exc is not None)


class SingleFlight:
    """A map of in-flight keys to their slot (see the module docstring)."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[tuple[str, ...], _Slot] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def acquire(self, key: tuple[str, ...], *, wait_s: float) -> Flight:
        """Join the flight of ``key``: lead it, or wait up to ``wait_s`` for its leader.

        Args:
            key: what makes two requests identical (scope, normalised query, parts).
            wait_s: the longest a follower waits, takeovers included.

        Returns:
            A :class:`Flight`; when ``flight.leader`` is False the caller should
            look the cache up again before calling the model.
        """
        slot = self._flights.get(key)
        if slot is None:
            slot = _Slot()
            self._flights[key] = slot
            return Flight(self, key, slot)
        flight = Flight(self, key, None)
        flight.waited = True
        deadline = anyio.current_time() + wait_s if math.isfinite(wait_s) else math.inf
        slot.waiting += 1
        try:
            while True:
                if slot.handoff:  # the leader failed: this follower takes over
                    slot.handoff = False
                    slot.done = anyio.Event()
                    flight._slot, flight.leader, flight.took_over = slot, True, True
                    return flight
                if self._flights.get(key) is not slot:
                    return flight  # the leader succeeded: look up again
                done = slot.done
                with anyio.move_on_after(deadline - anyio.current_time()):
                    await done.wait()
                if not done.is_set():
                    return flight  # waited long enough: an ordinary miss
        finally:
            slot.waiting -= 1
            if slot.handoff and not slot.waiting and self._flights.get(key) is slot:
                del self._flights[key]  # no one left to take over

    def _end(self, key: tuple[str, ...], slot: _Slot, *, failed: bool) -> None:
        current = self._flights.get(key) is slot
        if failed and current and slot.waiting:
            slot.handoff = True
        elif current:
            del self._flights[key]
        slot.done.set()
