"""Lookup counts that outlive the process: hits, misses, tokens and cost saved.

Every process adds to counters keyed by (scope mode, model) in memory; the
increments go to the backend's counter store (:mod:`._tallystore`: a table of the
SQLite file, a hash of the Redis namespace) at most every ``flush_every_s``, at
the next lookup, and at close. So ``pipeline.cache.stats()`` and ``stagecache
stats`` in another process see the hits *and* the misses of every process that
shares the store, written at most ``flush_every_s`` behind (a process killed
without closing loses at most that much). The memory backend has no store: its
counts are the process's own.

Counting never costs a request: a write is one batched increment per (mode,
model) row, bounded in time, and a failed or slow write is logged (at most once
a minute) and kept for the next one. A write that timed out is dropped instead
(Redis may have applied it: counted once, never twice).

A hit records the tokens of the stored answer's model call (the usage stored
with the entry) and, where the model has a price, what those tokens cost. A hit
without a recorded usage, or on a model without a price, adds to
``unpriced_hits``: its cost is unknown, never counted as 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import anyio

__all__ = ["CounterStore", "Counts", "LookupTally", "summarise"]

_log = logging.getLogger("stagecache.cache")

#: (scope mode, model id): one row of counters.
Key = tuple[str, str]

#: The counters of a row, in store order (``cost_usd`` is a float, the rest ints).
FIELDS = ("hits", "misses", "prompt_tokens", "completion_tokens", "priced_hits")
COST = "cost_usd"

#: Distinct model ids counted per process; later ones count as ``other``.
MAX_MODELS = 100
#: Longest model id kept (a longer one is cut).
MAX_MODEL_CHARS = 100
#: Failed writes are logged at most this often (seconds).
_LOG_EVERY_S = 60.0


class Counts:
    """The counters of one (scope mode, model) row."""

    __slots__ = (*FIELDS, COST)

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.priced_hits = 0
        self.cost_usd = 0.0

    def add(self, other: Counts) -> None:
        """Add ``other``'s counters to these."""
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost_usd += other.cost_usd

    def items(self) -> list[tuple[str, int | float]]:
        """(field, value) of every counter, ``cost_usd`` last."""
        return [*((n, getattr(self, n)) for n in FIELDS), (COST, self.cost_usd)]


class CounterStore(Protocol):
    """Where the counters of every process add up (a backend's table or hash)."""

    async def add(self, deltas: Mapping[Key, Counts]) -> dict[Key, Counts]:
        """Add ``deltas`` in one write; return the totals after it."""
        ...

    async def read(self) -> dict[Key, Counts]:
        """The totals."""
        ...


def merged(*tables: Mapping[Key, Counts]) -> dict[Key, Counts]:
    """The sum of counter tables."""
    out: dict[Key, Counts] = {}
    for table in tables:
        for key, counts in table.items():
            out.setdefault(key, Counts()).add(counts)
    return out


class LookupTally:
    """This process's lookup counts, and the totals of its counter store.

    Args:
        store: the backend's counter store; None keeps the counts in memory.
        flush_every_s: how long increments wait to be written together.
    """

    def __init__(self, store: CounterStore | None, *, flush_every_s: float = 1.0):
        self.store = store
        self.flush_every_s = flush_every_s
        self._totals: dict[Key, Counts] = {}  # the store's, as last read
        self._pending: dict[Key, Counts] = {}
        self._inflight: dict[Key, Counts] = {}
        self._models: set[str] = set()
        self._flushed_at = -math.inf
        self._flushing = False
        self._failures = 0
        self._logged_at = -math.inf

    def _row(self, mode: str, model: str) -> Counts:
        model = (model or "unknown")[:MAX_MODEL_CHARS]
        if model not in self._models:
            if len(self._models) >= MAX_MODELS:
                model = "other"  # a model id comes from outside: bound the rows
            else:
                self._models.add(model)
        table = self._pending if self.store is not None else self._totals
        key = (mode or "none", model)
        row = table.get(key)
        if row is None:
            row = table[key] = Counts()
        return row

    def hit(
        self,
        mode: str,
        model: str,
        *,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cost_usd: float | None,
    ) -> None:
        """Count a hit; the tokens of the stored answer's call (None: not
        recorded) and what they cost (None: no price, or no tokens)."""
        row = self._row(mode, model)
        row.hits += 1
        row.prompt_tokens += max(prompt_tokens or 0, 0)
        row.completion_tokens += max(completion_tokens or 0, 0)
        if cost_usd is not None and math.isfinite(cost_usd):
            row.priced_hits += 1
            row.cost_usd += max(cost_usd, 0.0)

    def miss(self, mode: str, model: str) -> None:
        """Count a miss."""
        self._row(mode, model).misses += 1

    def due(self) -> bool:
        """Whether increments wait to be written and ``flush_every_s`` passed."""
        return (
            bool(self._pending)
            and not self._flushing
            and anyio.current_time() - self._flushed_at >= self.flush_every_s
        )

    def snapshot(self) -> dict[Key, Counts]:
        """The store's totals as last read, plus what this process has not
        written yet."""
        return merged(self._totals, self._inflight, self._pending)

    def summary(self) -> dict[str, Any]:
        """Totals, ``by_scope_mode`` and ``by_model`` (see :func:`summarise`)."""
        return summarise(self.snapshot())

    async def load(self, timeout_s: float) -> None:
        """Read the store's totals (at warm-up); a failure is logged."""
        if self.store is None or self._flushing:
            return  # (a write in flight returns the totals itself)
        try:
            with anyio.fail_after(timeout_s):
                self._totals = await self.store.read()
        except Exception as exc:  # counts are never worth a failed start
            self._report(exc)

    async def flush(self, timeout_s: float) -> None:
        """Write the increments waiting (one write, at most ``timeout_s``).

        Never raises: a failed write is logged and kept for the next one; a
        write that timed out is dropped (it may have been applied).
        """
        if self.store is None or not self._pending or self._flushing:
            return
        if timeout_s <= 0:
            return  # no time left in this lookup: the next one writes them
        batch, self._pending = self._pending, {}
        self._inflight, self._flushing = batch, True
        self._flushed_at = anyio.current_time()
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(timeout_s):
                totals = await self.store.add(batch)
        except TimeoutError as exc:
            self._report(exc, dropped=batch)
        except Exception as exc:  # any store failure: the request goes on
            self._pending = merged(batch, self._pending)
            self._report(exc)
        else:
            self._totals = totals
        finally:
            self._inflight, self._flushing = {}, False

    def _report(self, exc: Exception, dropped: Mapping[Key, Counts] = {}) -> None:
        self._failures += 1
        now = anyio.current_time()
        if now - self._logged_at < _LOG_EVERY_S:
            return
        lost = sum(c.hits + c.misses for c in dropped.values())
        _log.warning(
            "cache: lookup counts not written (%d failures since the last report%s):"
            " %s: %.200s",
            self._failures,
            f"; {lost} lookups dropped" if lost else "",
            type(exc).__name__,
            exc,
        )
        self._failures, self._logged_at = 0, now


def _group(rows: Iterable[Counts]) -> dict[str, Any]:
    total = Counts()
    for row in rows:
        total.add(row)
    lookups = total.hits + total.misses
    unpriced = total.hits - total.priced_hits
    if total.priced_hits:
        cost: float | None = round(total.cost_usd, 6)
    else:  # no hit had a price: unknown, unless nothing was saved at all
        cost = None if total.hits else 0.0
    return {
        "hits": total.hits,
        "misses": total.misses,
        "hit_rate": round(total.hits / lookups, 4) if lookups else None,
        "tokens_saved": total.prompt_tokens + total.completion_tokens,
        "cost_saved_usd": cost,
        "unpriced_hits": unpriced,
    }


def summarise(table: Mapping[Key, Counts]) -> dict[str, Any]:
    """Counts as reported by ``stats()``.

    Returns:
        ``hits``, ``misses``, ``hit_rate`` (None before any lookup),
        ``tokens_saved``, ``cost_saved_usd`` (None: unknown, no hit had a price;
        with some ``unpriced_hits`` it is the cost of the priced ones) and
        ``unpriced_hits``; the same under ``by_scope_mode`` and ``by_model``.
    """
    modes: dict[str, list[Counts]] = {}
    models: dict[str, list[Counts]] = {}
    for (mode, model), counts in table.items():
        modes.setdefault(mode, []).append(counts)
        models.setdefault(model, []).append(counts)
    return {
        **_group(table.values()),
        "by_scope_mode": {m: _group(rows) for m, rows in sorted(modes.items())},
        "by_model": {m: _group(rows) for m, rows in sorted(models.items())},
    }
