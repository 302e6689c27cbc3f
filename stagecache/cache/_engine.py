"""The semantic cache engine: lookup and store over scoped, per-scope indexes.

Hit rule: cosine >= the candidate floor AND exact equality of :class:`KeyParts`,
inside the caller's scope only. Candidates failing the parts are skipped; if a
verifier is set it is asked about the remaining candidates, best first, up to
``top_k``, and the first accepted wins. A ``[cache] threshold`` the user set is a
hard floor: a candidate below it never hits, whatever the verifier says (checked
here too, so a third-party verifier cannot break it). Expired entries never hit.

Concurrency (one event loop): every write holds the engine's write lock; lookups
do not take it. Stores are group-committed (``_storebatch``): concurrent stores
queue up and the writer of the moment writes them all in one backend call, so a
burst costs a few writes, not one lock turn each, and two identical concurrent
stores still see each other and make one entry. Index operations on a scope hold
that scope's lock, because a search may run in a worker thread. Writers take the
write lock then scope locks, lookups only a scope lock, so no cycle can form.
Writes run in a shielded cancel scope and change the backend before memory: a
cancelled or failed store leaves index and backend agreeing (at worst the backend
holds a row the index lacks, never the reverse, and a row without an index entry
is re-indexed at the next warm-up).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import anyio
import msgspec
import numpy as np
from numpy.typing import NDArray

from stagecache._model import Candidate, Verdict
from stagecache.cache._backend import Entry
from stagecache.cache._explain import Explanation, explain_lookup, miss_reason
from stagecache.cache._flight import Flight
from stagecache.cache._hitbook import HitBookkeeping
from stagecache.cache._index import FlatIndex, HnswIndex
from stagecache.cache._operator import OperatorAccess
from stagecache.cache._persist import delete_saved
from stagecache.cache._scope import Scope, normalise_query
from stagecache.cache._settings import DEFAULT_THRESHOLD, KeyParts
from stagecache.cache._state import ScopeState
from stagecache.cache._storebatch import INLINE_SEARCH_MAX, BatchedStore
from stagecache.errors import BackendUnavailable, InputError

__all__ = ["Lookup", "SemanticCache", "StoreItem"]

_log = logging.getLogger("stagecache.cache")

# Nearest neighbours fetched per lookup, beyond top_k, so that entries skipped for
# mismatching key parts do not hide a matching one just behind them.
SEARCH_EXTRA = 16


class Lookup(msgspec.Struct):
    """The result of :meth:`SemanticCache.lookup`.

    Attributes:
        hit: the candidate that answers, or None.
        best_similarity: cosine of the nearest live entry of the scope, if any.
        candidates: entries above threshold that passed the exact parts, best first.
        reason: ``hit``, ``no_candidate``, ``below_threshold``, ``key_mismatch``,
            ``expired`` or ``rejected_by_verifier``.
        entry_age_s: age of the entry that answered.
        verdict: the verifier's verdict on the hit (or on the last rejected one).
        touch_error: why the hit's recency update failed (``Type: message``);
            the hit is served all the same.
    """

    hit: Candidate | None
    best_similarity: float | None
    candidates: list[Candidate]
    reason: str
    entry_age_s: float | None = None
    verdict: Verdict | None = None
    touch_error: str | None = None


class StoreItem(msgspec.Struct, kw_only=True):
    """One entry for :meth:`SemanticCache.store_many` (same fields as ``store``)."""

    scope: Scope
    query: str
    vector: Any
    parts: KeyParts
    answer: str
    metadata: dict[str, str] = {}
    ttl_s: float | None = None


class SemanticCache(BatchedStore, OperatorAccess, HitBookkeeping):
    """A scoped semantic cache over a pluggable backend.

    Args:
        settings: cache settings (checked here: raises ConfigError).
        backend: where entries live; default from ``settings.backend``.
        dim: embedding dimension.
        verifier: optional second opinion on every candidate (settable).
        events: bus for ``CacheEvicted``, ``Invalidated`` and ``Feedback`` events.
        clock: seconds since the epoch (inject a fake one in tests).
    """

    #: Why the cache is off (``start_degraded``), or None while it works.
    _down: str | None = None
    # -- lifecycle -------------------------------------------------------------

    def start_degraded(self, exc: BaseException) -> None:
        """Run without the cache after :meth:`warm_up` failed (a full disk, a
        backend that cannot open its file).

        Logged through the ``stagecache.cache`` logger and published as a
        ``cache.error`` event (operation ``warm_up``). From then on every lookup
        and store raises :class:`~stagecache.errors.BackendUnavailable` at once;
        the cache stages contain it, so requests are answered by the model. A
        restart with the fault fixed brings the cache back.
        """
        self._down = f"{type(exc).__name__}: {str(exc)[:200]}"
        self._report_fault("warm_up", exc)

    def _check_up(self) -> None:
        if self._down is not None:
            raise BackendUnavailable(
                f"the cache is off: it could not start ({self._down}); fix the "
                "cause (free disk space, reach the backend) and restart"
            )

    async def warm_up(self) -> None:
        """Open the backend and rebuild the indexes from its entries.

        A scope whose saved index in ``index_dir`` holds exactly the backend's ids
        is loaded from the file (no hnswlib rebuild); others are rebuilt from the
        stored vectors. Expired entries and entries over the caps are deleted.
        """
        if self._opened:
            return
        await self._backend.open()
        self._opened = True
        await self.tally.load(self._io_timeout)
        self._unsubscribe = self._backend.subscribe(self._changes.append)
        if not self._backend.stores_vectors:
            return
        now = self._now()
        live: list[Entry] = []
        expired: list[str] = []
        async for batch in self._backend.scan():
            for entry in batch:
                if entry.expires_at <= now:
                    expired.append(entry.entry_id)
                else:
                    live.append(entry)
        async with self._write_lock:
            if expired:
                await self._backend.delete(expired)
            await self._adopt(live, from_files=True)
            await self._remove(self._enforce_caps_after_load(), "lru")

    async def aclose(self) -> None:
        """Save hnswlib indexes to ``index_dir`` (when set) and close the backend."""
        if not self._opened:
            return
        self._opened = False
        if self._unsubscribe is not None:
            self._unsubscribe()
        index_dir = self._settings.index_dir
        with anyio.CancelScope(shield=True):
            if index_dir and self._backend.stores_vectors:
                for state in list(self._scopes.values()):
                    if isinstance(state.index, HnswIndex):
                        await self._save(state)
            elif index_dir:
                # The entries die with this process: leave no cold vectors behind
                # that no later purge_user could find.
                keys = list(self._scopes)
                await anyio.to_thread.run_sync(_delete_all, index_dir, keys)
            await self.tally.flush(self._io_timeout)
            await self._backend.aclose()

    async def __aenter__(self) -> SemanticCache:
        await self.warm_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def single_flight(
        self, scope: Scope, query: str, parts: KeyParts, *, wait_s: float = 30.0
    ) -> Flight:
        """Join the flight of (scope, normalised query, parts).

        The first caller leads (``flight.leader``): it calls the model, stores, and
        releases. Callers arriving meanwhile wait for that release (at most
        ``wait_s``), then should look up again, which hits. Use
        ``async with await cache.single_flight(...) as flight:`` or call
        ``flight.release()`` (idempotent, from any task).
        """
        key = (scope.key, normalise_query(query), *msgspec.structs.astuple(parts))
        return await self._flights.acquire(key, wait_s=wait_s)

    # -- lookup ----------------------------------------------------------------

    def _check_vector(self, vector: Any) -> NDArray[np.float32]:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self._dim:
            raise InputError(
                f"vector: expected {self._dim} dimensions, got {v.shape[0]}"
            )
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise InputError("vector: must be finite and non-zero")
        # Embedders return unit rows; renormalising is cheap insurance that the
        # inner product the indexes compute really is the cosine.
        return v if abs(norm - 1.0) < 1e-4 else v / norm

    async def _search(
        self, state: ScopeState, vector: NDArray[np.float32], k: int
    ) -> list[tuple[str, float]]:
        async with state.lock:
            index = await self._ensure_hot(state, write=False)  # lookups write no file
            if not isinstance(index, FlatIndex) or len(index) <= INLINE_SEARCH_MAX:
                return index.search(vector, k)
            return await anyio.to_thread.run_sync(index.search, vector, k)

    @property
    def threshold(self) -> float:
        """The cosine floor in force (what outcomes, spans and metrics report).

        ``settings.threshold`` when set (the verifier may raise it: a learned
        kind never goes below its calibrated floor), else the verifier's own
        floor (``effective_floor``), else 0.92.
        """
        t = self._settings.threshold
        effective = getattr(self.verifier, "effective_floor", None)
        if effective is not None:
            return float(effective(t))
        if t is not None:
            return t
        floor = getattr(self.verifier, "candidate_threshold", None)
        return DEFAULT_THRESHOLD if floor is None else float(floor)

    @property
    def candidate_floor(self) -> float:
        """The cosine a candidate needs to be considered at all.

        The verifier's ``candidate_threshold`` when it has one (a learned verifier
        searches lower, for the rank context, and applies its floors itself), else
        :attr:`threshold`.
        """
        floor = getattr(self.verifier, "candidate_threshold", None)
        return self.threshold if floor is None else float(floor)

    def decision_floor(self, verdict: Verdict | None) -> float:
        """The cosine floor of the rule behind ``verdict`` (the floor in force
        when there is none, or when the rule names none)."""
        floor = verdict.floor if verdict is not None else None
        if floor is None:
            return self.threshold
        hard = self._settings.threshold
        return floor if hard is None else max(floor, hard)

    async def lookup(
        self, scope: Scope, vector: Any, parts: KeyParts, query: str
    ) -> Lookup:
        """Find a cached answer for ``query`` in ``scope``.

        Args:
            scope: the caller's scope (from :meth:`scope_for`).
            vector: the query embedding (``dim`` floats, L2-normalised).
            parts: the exact-match key parts.
            query: the query text (given to the verifier).

        Returns:
            A :class:`Lookup`; ``lookup.hit`` is the answering candidate or None.
        """
        self._check_up()
        if self.tally.due():  # counts of earlier lookups, batched (``_tally``)
            left = anyio.current_effective_deadline() - anyio.current_time()
            await self.tally.flush(min(self._io_timeout, left / 4))
        if self._changes:
            await self._apply_changes_read()
        v = self._check_vector(vector)
        state = self._scopes.get(scope.key)
        if state is None or not len(state):
            return Lookup(
                hit=None, best_similarity=None, candidates=[], reason="no_candidate"
            )
        s = self._settings
        floor = self.candidate_floor
        found = await self._search(state, v, s.top_k + SEARCH_EXTRA)
        now = self._now()
        best = found[0][1] if found else None
        passing: list[tuple[str, float]] = []
        expired: list[str] = []
        mismatched = False
        for entry_id, sim in found:
            rule = self._rule_of(entry_id, state, sim, parts, now, floor)
            if rule is None:
                continue  # removed meanwhile; never another scope's entry
            if rule == "expired":
                expired.append(entry_id)
                continue
            if rule == "below_threshold":
                break
            if rule == "key_mismatch":
                mismatched = True
                continue
            passing.append((entry_id, sim))
            if len(passing) >= s.top_k:
                break
        if expired:
            await self._reclaim(expired)
        if not passing:
            reason = miss_reason(mismatched, bool(expired), best, floor)
            return Lookup(hit=None, best_similarity=best, candidates=[], reason=reason)
        return await self._decide(scope, state, passing, best, query, now)

    def _rule_of(
        self,
        entry_id: str,
        state: ScopeState,
        sim: float,
        parts: KeyParts,
        now: float,
        floor: float,
    ) -> str | None:
        """The rule a search result falls under before any verifier: None (gone,
        or not of this scope), ``expired``, ``below_threshold``, ``key_mismatch``
        or ``candidate``. Lookups and :meth:`explain` both decide with it."""
        record = self._records.get(entry_id)
        if record is None or record.state is not state:
            return None
        if record.expires_at <= now:
            return "expired"
        if sim < floor:
            return "below_threshold"
        if record.parts != parts:
            return "key_mismatch"
        return "candidate"

    async def _judge(
        self, scope: Scope, passing: list[tuple[str, float]], query: str
    ) -> tuple[
        list[tuple[Candidate, Entry]], tuple[Candidate, Entry] | None, Verdict | None
    ]:
        """Fetch the passing entries and ask the verifier: (the candidates, the
        one that answers or None, the verdict on it or on the last rejected)."""
        entries = await self._backend.get_many([i for i, _ in passing])
        candidates: list[tuple[Candidate, Entry]] = []
        for entry_id, sim in passing:
            entry = entries.get(entry_id)
            if entry is None or entry.scope_key != scope.key:
                continue  # defence in depth: the backend row must agree on the scope
            cand = Candidate(
                entry_id=entry_id,
                query=entry.query,
                similarity=sim,
                answer=entry.answer,
                hits=entry.hits,
                created_at=entry.created_at,
                metadata=entry.metadata,
            )
            candidates.append((cand, entry))
        verdict: Verdict | None = None
        chosen: tuple[Candidate, Entry] | None = None
        verifier = self.verifier
        hard = self._settings.threshold
        ranked = getattr(verifier, "verify_ranked", None)
        if verifier is None:
            chosen = candidates[0] if candidates else None
        elif ranked is not None and candidates:
            # The verifier sees every candidate at once (the gap to the runner-up is
            # evidence: a query close to several different entries is ambiguous).
            index, verdict = ranked(query, [c for c, _ in candidates])
            chosen = candidates[index] if index is not None else None
        else:
            for cand, entry in candidates:
                verdict = verifier.verify(query, cand)
                if verdict.accept:
                    chosen = (cand, entry)
                    break
        if chosen is not None and hard is not None and chosen[0].similarity < hard:
            # Best first: every candidate above the threshold was rejected.
            sim = chosen[0].similarity
            verdict = Verdict(
                False,
                verdict.score if verdict is not None else sim,
                f"below threshold: cosine {sim:.3f} < {hard:.3f}",
                hard,
            )
            chosen = None
        return candidates, chosen, verdict

    async def _decide(
        self,
        scope: Scope,
        state: ScopeState,
        passing: list[tuple[str, float]],
        best: float | None,
        query: str,
        now: float,
    ) -> Lookup:
        candidates, chosen, verdict = await self._judge(scope, passing, query)
        listed = [c for c, _ in candidates]
        if chosen is None:
            reason = self.rejection_reason(listed)
            return Lookup(
                hit=None,
                best_similarity=best,
                candidates=listed,
                reason=reason,
                verdict=verdict,
            )
        cand, entry = chosen
        record = self._records.get(cand.entry_id)
        if record is not None:
            self._touch(cand.entry_id, record, now)
        slid = self._slid_expiry(entry, now)
        return Lookup(
            hit=cand,
            best_similarity=best,
            candidates=listed,
            reason="hit",
            entry_age_s=max(0.0, now - entry.created_at),
            verdict=verdict,
            touch_error=await self._touch_backend(entry, now, slid),
        )

    def rejection_reason(self, candidates: Sequence[Candidate]) -> str:
        """Why a lookup whose candidates were all turned down missed:
        ``below_threshold`` when every one is under a threshold the user set,
        else ``rejected_by_verifier`` (``no_candidate`` without candidates)."""
        if not candidates:
            return "no_candidate"
        hard = self._settings.threshold
        if hard is not None and all(c.similarity < hard for c in candidates):
            return "below_threshold"
        return "rejected_by_verifier"

    async def _reclaim(self, expired: list[str]) -> None:
        """Delete entries a lookup found expired; a failure only postpones it.

        They never hit (every read checks the expiry), and the next store sweeps
        them, so a backend that cannot write (a full disk) does not fail the lookup.
        """
        try:
            async with self._write_lock:
                await self._remove([i for i in expired if i in self._records], "ttl")
        except Exception as exc:  # contained, logged; the next sweep retries
            _log.warning(
                "cache: reclaiming %d expired entries failed: %s: %.200s",
                len(expired),
                type(exc).__name__,
                exc,
            )

    async def explain(
        self, scope: Scope, vector: Any, parts: KeyParts, query: str, *, k: int = 5
    ) -> Explanation:
        """Why ``query`` hits or misses in ``scope``, without changing anything.

        The same search, rules and verifier as :meth:`lookup` (no recency update,
        no reclaiming of expired entries); see :mod:`stagecache.cache._explain`.

        Args:
            scope: the caller's scope.
            vector: the query embedding.
            parts: the exact-match key parts.
            query: the query text.
            k: how many of the nearest entries of the scope to list (1 to 100).
        """
        return await explain_lookup(self, scope, vector, parts, query, k=k)

    # -- store -------------------------------------------------------------------

    async def store(
        self,
        scope: Scope,
        query: str,
        vector: Any,
        parts: KeyParts,
        answer: str,
        *,
        metadata: dict[str, str] | None = None,
        ttl_s: float | None = None,
    ) -> str | None:
        """Cache ``answer`` for ``query`` in ``scope``; returns the entry id.

        An entry of the same scope and parts with the same normalised query (or a
        vector at cosine >= 0.9999) is refreshed (new answer, TTL and recency)
        rather than duplicated. Evicts least recently used entries past the caps.
        """
        item = StoreItem(
            scope=scope,
            query=query,
            vector=vector,
            parts=parts,
            answer=answer,
            metadata=metadata or {},
            ttl_s=ttl_s,
        )
        return (await self.store_many([item]))[0]

    async def store_many(self, items: Sequence[StoreItem]) -> list[str | None]:
        """Store many entries (bulk import); returns their ids, in order.

        Same rules as :meth:`store`. Vectors are validated before anything is
        written, so a bad item fails the whole call and stores nothing.
        """
        self._check_up()
        vectors = [self._check_vector(item.vector) for item in items]
        if self._changes:
            await self.apply_changes()
        if not items:
            return []
        return await self._store_queued(items, vectors)


def _delete_all(index_dir: str, keys: list[str]) -> None:
    for key in keys:
        delete_saved(index_dir, key)
