"""What a hit writes: its recency and count, and with ``sliding_ttl`` its later expiry.

Bookkeeping never costs the hit: a slow backend is skipped after ``timeout_s``, a
failing one is logged (at most once a minute) and the answer is served anyway.

A sliding TTL moves ``expires_at``, which the row's checksum (or GCM tag) covers
(``_rowcodec``), so the hit rewrites the row whole through ``put`` rather than
``touch``; under the write lock and from a fresh read, so a store that refreshed
the entry meanwhile is never overwritten. On Redis that ``put`` reaches every
worker, which moves its own copy of the expiry.
"""

from __future__ import annotations

import heapq
import logging
import math

import anyio
import msgspec

from stagecache.cache._backend import Entry
from stagecache.cache._maintain import Maintenance

__all__ = ["HitBookkeeping"]

_log = logging.getLogger("stagecache.cache")

#: Failed recency updates are logged at most this often (seconds).
_TOUCH_LOG_EVERY_S = 60.0


class HitBookkeeping(Maintenance):
    """The engine's hit writes (a mixin of :class:`SemanticCache`)."""

    #: Failed recency updates not logged yet, and when the last was logged.
    _touch_failures = 0
    _touch_logged_at = -math.inf

    def _slid_expiry(self, entry: Entry, now: float) -> float | None:
        """With ``sliding_ttl``: the expiry a hit now gives ``entry`` (now + the
        TTL it was stored with, at most ``max_lifetime_s`` after it was written),
        or None when it would not move the expiry later."""
        s = self._settings
        if not s.sliding_ttl:
            return None
        # A store sets expires_at = last_used + ttl and every slide keeps that
        # gap (feedback leaves both alone), so the gap is the entry's own TTL.
        ttl = entry.expires_at - entry.last_used
        slid = min(now + ttl, entry.created_at + s.max_lifetime_s)
        return slid if slid > entry.expires_at else None

    async def _slide(self, entry_id: str, now: float, expires_at: float) -> None:
        """Rewrite a hit entry with its later expiry (and the hit counted).

        The expiry is covered by the row's checksum (or GCM tag), so the row is
        written whole, through ``put``, under the write lock and from a fresh
        read: a store that refreshed the entry meanwhile is never overwritten.
        On Redis the ``put`` reaches every worker, which moves its expiry too.
        """
        async with self._write_lock:
            current = (await self._backend.get_many([entry_id])).get(entry_id)
            if current is None or current.expires_at >= expires_at:
                return  # gone, or refreshed to a later expiry meanwhile
            await self._backend.put(
                msgspec.structs.replace(
                    current, last_used=now, hits=current.hits + 1, expires_at=expires_at
                )
            )
            record = self._records.get(entry_id)
            if record is not None and record.expires_at < expires_at:
                record.expires_at = expires_at
                heapq.heappush(self._expiry, (expires_at, entry_id))

    async def _touch_backend(
        self, entry: Entry, now: float, slid: float | None = None
    ) -> str | None:
        """Record a hit's recency and count (and, with ``sliding_ttl``, its later
        expiry ``slid``); returns why that failed, or None.

        Bookkeeping never costs the hit: a slow backend is skipped after
        ``timeout_s`` and a failing one (a full disk) is logged, and the caller
        still gets its answer (the shield keeps a cancelled caller from tearing
        the write).
        """
        # Within the caller's own deadline too (the stage bounds a lookup by
        # ``timeout_s``): half of what is left, so a hung touch never turns the hit
        # into a timed-out lookup.
        left = anyio.current_effective_deadline() - anyio.current_time()
        limit = min(self._io_timeout, left / 2)
        try:
            with anyio.CancelScope(shield=True):
                with anyio.fail_after(limit):
                    if slid is not None:
                        await self._slide(entry.entry_id, now, slid)
                        return None
                    await self._backend.touch(
                        entry.entry_id,
                        last_used=now,
                        hits=entry.hits + 1,
                        positive=entry.positive,
                        negative=entry.negative,
                    )
        except Exception as exc:  # any backend failure: the answer is still right
            kind = (
                "TimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__
            )
            self._log_touch_failure(kind, exc)
            return f"{kind}: {str(exc)[:200]}"
        return None

    def _log_touch_failure(self, kind: str, exc: Exception) -> None:
        """Warn on the first failed recency update, then once a minute at most
        (a full disk fails every hit: the ``cache.error`` events count them all)."""
        self._touch_failures += 1
        now = anyio.current_time()
        if now - self._touch_logged_at < _TOUCH_LOG_EVERY_S:
            return
        _log.warning(
            "cache: recency update failed, hit served (%d failed since the last "
            "report): %s: %.200s",
            self._touch_failures,
            kind,
            exc,
        )
        self._touch_failures, self._touch_logged_at = 0, now
