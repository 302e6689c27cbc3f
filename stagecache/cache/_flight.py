"""Single flight: N identical concurrent misses make one model call and one store.

The first request for a key becomes the *leader* and holds a flight until it has
stored its answer (or failed). Requests for the same key that arrive meanwhile are
*followers*: they wait for the leader's flight to end (at most ``wait_s``), then look
the cache up again, which now hits. A follower never becomes a leader: if the leader
failed or timed out, followers go on as ordinary misses, so a stuck leader delays
them by ``wait_s`` at most and never deadlocks them.

A flight is released explicitly (``release()``, idempotent) or by ``async with``; it
may be released by another task than the one that acquired it, so the cache stage
can acquire in the cache-check stage and release in the store stage. The key map
drops a key as soon as its leader releases, so it never grows past the number of
requests in flight.
"""

from __future__ import annotations

from types import TracebackType

import anyio

__all__ = ["Flight", "SingleFlight"]


class Flight:
    """One request's place in a flight.

    Attributes:
        leader: True for the request that should call the model and store.
        waited: True when this follower waited for a leader.
    """

    __slots__ = ("_done", "_key", "_owner", "leader", "waited")

    def __init__(
        self, owner: SingleFlight, key: tuple[str, ...], done: anyio.Event | None
    ) -> None:
        self._owner = owner
        self._key = key
        self._done = done
        self.leader = done is not None
        self.waited = False

    def release(self) -> None:
        """End the flight (leader: wake the followers). Idempotent."""
        done, self._done = self._done, None
        if done is not None:
            if self._owner._flights.get(self._key) is done:
                del self._owner._flights[self._key]
            done.set()

    async def __aenter__(self) -> Flight:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class SingleFlight:
    """A map of in-flight keys to the event their leader sets on release."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[tuple[str, ...], anyio.Event] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def acquire(self, key: tuple[str, ...], *, wait_s: float) -> Flight:
        """Join the flight of ``key``: lead it, or wait up to ``wait_s`` for its leader.

        Args:
            key: what makes two requests identical (scope, normalised query, parts).
            wait_s: the longest a follower waits for the leader.

        Returns:
            A :class:`Flight`; when ``flight.leader`` is False the caller should
            look the cache up again before calling the model.
        """
        done = self._flights.get(key)
        if done is None:
            done = anyio.Event()
            self._flights[key] = done
            return Flight(self, key, done)
        flight = Flight(self, key, None)
        flight.waited = True
        with anyio.move_on_after(wait_s):
            await done.wait()
        return flight
