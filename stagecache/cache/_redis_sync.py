"""Following the change stream: every worker applies every other worker's writes.

The :class:`Follower` is one asyncio task per backend, on its own connection. It
reads the namespace's stream (``XREAD BLOCK``), turns events into
:class:`~stagecache.cache.Change` values (fetching the stored entries of ``put``
events in one pipeline per batch, so the stream never carries values, encrypted or
not) and hands them to the engine, which applies them before its next lookup or
store. Its own events are skipped: the engine already did them.

Gaps: every event carries ``seq``, incremented atomically with the write. A jump
(the stream trimmed events this worker never read), an epoch that changed (Redis
restarted empty) or a ``seq`` that went back (restarted from an older snapshot)
triggers a **resync**: the follower reads the state, scans every entry and
delivers ``clear`` followed by one ``put`` per entry; the engine rebuilds its
indexes from them. Events published during the scan are replayed afterwards
(they are idempotent), its own included for a few seconds, so a store racing the
resync is not lost locally.

Disconnects: any error marks Redis down (one warning), then the follower retries
with jittered exponential backoff (50 ms to 2 s); when Redis answers it checks the
state as above, and resumes or resyncs: no restart needed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from stagecache.cache._backend import Change

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from stagecache.cache._redis import RedisBackend

__all__ = ["Follower"]

_log = logging.getLogger("stagecache.cache")

BATCH = 512
MIN_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0
# After a resync, the worker's own events are applied too for this long.
OWN_REPLAY_S = 5.0


class Follower:
    """Reads the change stream of one backend and delivers its changes.

    Attributes:
        resyncs: full rebuilds done so far.
        delivered: changes handed to the engine so far.
    """

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._epoch: bytes | None = None
        self._seq = 0
        self._last_id = "0-0"
        self._own_until = 0.0
        self._check = True
        self.resyncs = 0
        self.delivered = 0

    def start_at(self, epoch: bytes, seq: int, last_id: str) -> None:
        """Follow from this state (the engine scans everything before it)."""
        self._epoch, self._seq, self._last_id = epoch, seq, last_id
        self._check = False

    async def run(self) -> None:
        """Follow until cancelled, surviving any Redis failure."""
        backoff = MIN_BACKOFF_S
        down_since: float | None = None
        while not self._backend.closing:
            client = self._backend._sub
            if client is None:
                return
            try:
                if self._check:
                    await self._reconnect(client)
                    self._check = False
                await self._read(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._backend.closing:
                    return
                if down_since is None:
                    down_since = time.monotonic()
                    _log.warning(
                        "cache: lost the Redis change stream at %s (%s); lookups "
                        "and stores fail over to the model until it is back",
                        self._backend.safe_url,
                        exc,
                    )
                self._check = True
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if down_since is not None:
                _log.warning(
                    "cache: Redis at %s is back after %.1f s; change stream resumed",
                    self._backend.safe_url,
                    time.monotonic() - down_since,
                )
                down_since = None
            backoff = MIN_BACKOFF_S

    async def _reconnect(self, client: Redis) -> None:
        epoch, seq, _ = await self._backend.state(client)
        if self._epoch is None or epoch != self._epoch or seq < self._seq:
            await self.resync(client)
            return
        if seq == self._seq:
            return
        key = self._backend.key("log")
        after = await client.xrange(key, min="(" + self._last_id, count=1)
        if not after or _seq_of(after[0][1]) != self._seq + 1:  # type: ignore[arg-type]
            await self.resync(client)

    async def resync(self, client: Redis) -> None:
        """Rebuild: deliver ``clear`` and every entry, then follow from there."""
        backend = self._backend
        epoch, seq, last_id = await backend.state(client)
        changes = [Change(kind="clear")]
        async for batch in backend.scan_with(client):
            changes.extend(Change(kind="put", entry=e) for e in batch)
        self._epoch, self._seq, self._last_id = epoch, seq, last_id
        self._own_until = time.monotonic() + OWN_REPLAY_S
        self.resyncs += 1
        self.delivered += len(changes)
        backend._deliver(changes)
        _log.warning(
            "cache: rebuilt from Redis at %s: %d entries (resync %d)",
            backend.safe_url,
            len(changes) - 1,
            self.resyncs,
        )

    async def _read(self, client: Redis) -> None:
        backend = self._backend
        key = backend.key("log")
        reply = await client.xread(
            {key: self._last_id}, count=BATCH, block=int(backend.block_s * 1000)
        )
        messages = _messages(reply)
        if not messages:
            return
        seq, last_id = self._seq, self._last_id
        own = backend.origin.encode()
        replay_own = time.monotonic() < self._own_until
        plan: list[Change | str] = []
        for message_id, fields in messages:
            got = _seq_of(fields)
            if got != seq + 1:
                await self.resync(client)
                return
            seq, last_id = got, _text(message_id)
            if fields.get(b"o") == own and not replay_own:
                continue
            op = fields.get(b"op")
            if op == b"put":
                plan.append(_text(fields[b"ids"]))
            elif op == b"del":
                ids = tuple(_text(fields[b"ids"]).split(","))
                purge = fields.get(b"why") == b"purge"
                plan.append(Change(kind="purge" if purge else "delete", entry_ids=ids))
            elif op == b"scope":
                plan.append(Change(kind="scope", scope_key=_text(fields[b"sk"])))
            elif op == b"clear":
                plan.append(Change(kind="clear"))
        wanted = list(dict.fromkeys(p for p in plan if isinstance(p, str)))
        entries = await backend.fetch(client, wanted) if wanted else {}
        changes: list[Change] = []
        for item in plan:
            if isinstance(item, Change):
                changes.append(item)
            elif item in entries:
                changes.append(Change(kind="put", entry=entries[item]))
        # Commit the position only once the changes are in hand: a failure above
        # re-reads the same events after the reconnect.
        self._seq, self._last_id = seq, last_id
        if changes:
            self.delivered += len(changes)
            backend._deliver(changes)


def _messages(reply: Any) -> list[tuple[Any, dict[bytes, bytes]]]:
    """The (id, fields) pairs of an XREAD reply (RESP2: [[stream, messages]])."""
    if not reply:
        return []
    return [(m[0], m[1]) for m in reply[0][1]]


def _seq_of(fields: dict[bytes, bytes]) -> int:
    return int(fields.get(b"seq", b"0"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
