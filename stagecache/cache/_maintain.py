"""Removal of entries: eviction (LRU caps, TTL), invalidation, purge, feedback and
changes from other processes (cold scopes are ``_cold``).

Every method here that changes state is called with the engine's write lock held
(the public ones take it) and inside a shielded cancel scope: the backend changes
first, memory second, so a failure leaves both agreeing on what exists.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from functools import partial

import anyio

from stagecache.cache._backend import Entry
from stagecache.cache._cold import ColdScopes
from stagecache.cache._feedbacklog import FeedbackLog, FeedbackRecord
from stagecache.cache._index import FlatIndex, HnswIndex, ScopeIndex
from stagecache.cache._persist import (
    delete_saved,
    delete_saved_of_user,
    file_base,
    load_index,
)
from stagecache.cache._scope import (
    OWNER_SEPARATOR,
    Scope,
    check_purge,
    owner_key,
    scope_hash,
)
from stagecache.cache._state import ScopeState
from stagecache.pipeline._events import CacheEvicted, Feedback, Invalidated

__all__ = ["Maintenance"]

# Expired entries reclaimed per opportunistic sweep, to bound a store's latency.
SWEEP_BATCH = 256


class Maintenance(ColdScopes):
    """Eviction, invalidation, purge, feedback (cold scopes: ``_cold``)."""

    # -- removal -------------------------------------------------------------------

    async def _forget(
        self, entry_ids: Iterable[str], *, may_save: bool = True
    ) -> dict[ScopeState, int]:
        """Remove entries from memory (records, indexes); the backend is done.

        ``may_save=False`` (a lookup applying other processes' changes): loading a
        cold scope unloads others without writing index files.
        """
        groups: dict[ScopeState, list[str]] = {}
        for entry_id in entry_ids:
            record = self._records.get(entry_id)
            if record is not None:
                groups.setdefault(record.state, []).append(entry_id)
        forget = getattr(self.verifier, "forget", None)  # per-entry verifier state
        for state, ids in groups.items():
            async with state.lock:
                index = await self._ensure_hot(state, may_save=may_save)
                for entry_id in ids:
                    index.remove(entry_id)
                    self._drop_record(entry_id)
                    if forget is not None:
                        forget(entry_id)
                if not state.by_qkey:
                    self._drop_scope(state)
                elif isinstance(index, HnswIndex) and index.deleted > max(
                    1024, len(index)
                ):
                    await self._compact(state)
        return {state: len(ids) for state, ids in groups.items()}

    async def _compact(self, state: ScopeState) -> None:
        """Rebuild a scope's index from its live rows (drops deleted vectors)."""
        index = state.index
        if index is None:
            return

        def rebuild() -> ScopeIndex:
            ids, vectors = index.export()
            return self._build(ids, vectors)

        state.index = await anyio.to_thread.run_sync(rebuild)

    def _drop_scope(self, state: ScopeState) -> None:
        for entry_id in list(state.by_qkey.values()):
            self._drop_record(entry_id)
        self._scopes.pop(state.key, None)
        self._hot.pop(state.key, None)
        state.index = None
        if self._settings.index_dir:
            delete_saved(self._settings.index_dir, state.key)

    async def _remove(self, entry_ids: list[str], reason: str) -> int:
        """Delete entries from the backend, then memory; publish one event per scope."""
        if not entry_ids:
            return 0
        with anyio.CancelScope(shield=True):
            await self._backend.delete(entry_ids)
            counts = await self._forget(entry_ids)
        for state, count in counts.items():
            self._publish(CacheEvicted(reason=reason, count=count, scope=state.hash))
        return sum(counts.values())

    async def _make_room(self, owner: str | None, incoming: int = 1) -> None:
        """Evict least recently used entries so ``incoming`` more fit the caps."""
        s = self._settings
        victims: list[str] = []
        if owner is not None:
            mine = self._by_user.get(owner, set())
            excess = len(mine) + incoming - s.max_entries_per_user
            if excess > 0:
                records = self._records
                victims = heapq.nsmallest(
                    excess, mine, key=lambda i: records[i].last_used
                )
        excess = len(self._records) - len(victims) + incoming - s.max_total_entries
        if excess > 0:
            chosen = set(victims)
            for entry_id in self._records:  # oldest first
                if excess <= 0:
                    break
                if entry_id not in chosen:
                    victims.append(entry_id)
                    excess -= 1
        await self._remove(victims, "lru")

    async def _sweep(self, now: float, limit: int | None = SWEEP_BATCH) -> int:
        """Reclaim entries expired by ``now`` (at most ``limit``)."""
        heap, records = self._expiry, self._records
        expired: list[str] = []
        while heap and heap[0][0] <= now and (limit is None or len(expired) < limit):
            _, entry_id = heapq.heappop(heap)
            record = records.get(entry_id)
            if record is not None and record.expires_at <= now:
                expired.append(entry_id)
        if len(heap) > 2 * len(records) + 1024:
            # Refreshes leave stale pairs behind; rebuild before they dominate.
            self._expiry = [(r.expires_at, i) for i, r in records.items()]
            heapq.heapify(self._expiry)
        return await self._remove(expired, "ttl")

    async def sweep(self) -> int:
        """Reclaim every expired entry now; returns the count."""
        async with self._write_lock:
            return await self._sweep(self._now(), limit=None)

    def _enforce_caps_after_load(self) -> list[str]:
        """Ids over the caps after a warm-up (oldest first), for the caller to evict."""
        s, over = self._settings, []
        for ids in self._by_user.values():
            if len(ids) > s.max_entries_per_user:
                ranked = sorted(ids, key=lambda i: self._records[i].last_used)
                over.extend(ranked[: len(ids) - s.max_entries_per_user])
        excess = len(self._records) - len(over) - s.max_total_entries
        chosen = set(over)
        for entry_id in self._records:
            if excess <= 0:
                break
            if entry_id not in chosen:
                over.append(entry_id)
                excess -= 1
        return over

    # -- public removal --------------------------------------------------------------

    async def invalidate(self, scope: Scope, *, reason: str = "write") -> int:
        """Remove every entry of ``scope``; returns the count.

        Args:
            scope: a :class:`~stagecache.cache.Scope`.
            reason: why (``write`` for a writing tool call); in the event.
        """
        key = scope.key
        async with self._write_lock:
            with anyio.CancelScope(shield=True):
                removed = await self._backend.delete_scope(key)
                state = self._scopes.get(key)
                known = len(state) if state is not None else 0
                if state is not None:
                    self._drop_scope(state)
                elif self._settings.index_dir:
                    delete_saved(self._settings.index_dir, key)
        count = max(removed, known)
        self._publish(Invalidated(scope=scope_hash(key), count=count, reason=reason))
        return count

    async def purge_user(
        self, user_id: str, *, tenant: str | None = None, all_tenants: bool = False
    ) -> int:
        """Remove every entry attributed to ``user_id`` of ``tenant`` (None: the
        user without a tenant), or of every tenant with ``all_tenants``, in any
        scope mode.

        Entries, vectors (hnswlib graphs touched are compacted, so no deleted
        vector lingers) and saved index files go, those of the user's scopes that
        no entry points to any more included; the backend erases the bytes (SQLite:
        ``secure_delete`` and a truncated WAL). Returns the number of entries.

        Raises:
            InputError: a bad id, or both ``tenant`` and ``all_tenants``.
        """
        check_purge(user_id, tenant, all_tenants)
        async with self._write_lock:
            with anyio.CancelScope(shield=True):
                if all_tenants:
                    owners = [
                        o
                        for o in self._by_user
                        if o.rpartition(OWNER_SEPARATOR)[2] == user_id
                    ]
                else:
                    owners = [owner_key(tenant, user_id) or user_id]
                ids = [i for o in owners for i in self._by_user.get(o, ())]
                removed = await self._backend.delete_user(
                    user_id, tenant, all_tenants=all_tenants
                )
                await self._compact_purged(await self._forget(ids))
                if self._settings.index_dir:
                    # Saved files no entry points to any more (rows purged by
                    # another process, or expired, while this one was down).
                    await anyio.to_thread.run_sync(
                        partial(
                            delete_saved_of_user,
                            self._settings.index_dir,
                            user_id,
                            frozenset(self._scopes),
                            tenant=tenant,
                            all_tenants=all_tenants,
                        )
                    )
        count = max(removed, len(ids))
        if count:
            self._publish(CacheEvicted(reason="purge", count=count))
        return count

    async def _compact_purged(self, counts: dict[ScopeState, int]) -> None:
        """Rebuild the hnswlib graphs purged entries were in (``mark_deleted``
        keeps a vector's bytes in memory and in the file saved at close)."""
        for state in counts:
            if state.key in self._scopes and isinstance(state.index, HnswIndex):
                async with state.lock:
                    await self._compact(state)

    async def clear(self) -> int:
        """Remove everything (entries, indexes, saved files); returns the count."""
        async with self._write_lock:
            with anyio.CancelScope(shield=True):
                removed = await self._backend.clear()
                known = len(self._records)
                self._records.clear()
                self._scopes.clear()
                self._by_user.clear()
                self._hot.clear()
                self._expiry.clear()
                if self._settings.index_dir:
                    delete_saved(self._settings.index_dir)
        count = max(removed, known)
        if count:
            self._publish(CacheEvicted(reason="clear", count=count))
        return count

    async def feedback(
        self, entry_id: str, correct: bool, *, query: str | None = None
    ) -> bool:
        """Record a user's verdict on an entry; returns whether the entry exists.

        Negative feedbacks that outnumber positive ones by
        ``negative_feedback_limit`` remove the entry (a ``CacheEvicted`` with
        reason ``feedback``). With ``query`` (the query that got the hit) and a
        backend that keeps a feedback log (memory, SQLite, Redis), the pair and the
        verdict are appended to it for ``stagecache tune`` (``_feedbacklog``).
        """
        async with self._write_lock:
            record = self._records.get(entry_id)
            if record is None:
                return False
            entry = (await self._backend.get_many([entry_id])).get(entry_id)
            if entry is None:
                return False
            positive = entry.positive + (1 if correct else 0)
            negative = entry.negative + (0 if correct else 1)
            self._publish(Feedback(entry_id=entry_id, correct=correct))
            if query is not None and isinstance(self._backend, FeedbackLog):
                with anyio.CancelScope(shield=True):
                    await self._backend.add_feedback(
                        FeedbackRecord(
                            entry_id=entry_id,
                            hit_query=query,
                            entry_query=entry.query,
                            correct=correct,
                            user_id=entry.user_id,
                            tenant=entry.tenant,
                            at=self._now(),
                        )
                    )
            if negative - positive >= self._settings.negative_feedback_limit:
                await self._remove([entry_id], "feedback")
                return True
            with anyio.CancelScope(shield=True):
                await self._backend.touch(
                    entry_id,
                    last_used=entry.last_used,
                    hits=entry.hits,
                    positive=positive,
                    negative=negative,
                )
            return True

    async def apply_changes(self) -> int:
        """Apply writes other processes made to a shared backend; returns how many."""
        if not self._changes:
            return 0
        async with self._write_lock:
            return await self._apply_changes_locked()

    async def _apply_changes_read(self) -> None:
        """``apply_changes`` for a lookup: indexes change, no index file is written."""
        async with self._write_lock:
            await self._apply_changes_locked(may_save=False)

    async def _apply_changes_locked(self, *, may_save: bool = True) -> int:
        """``apply_changes`` for a caller that holds the write lock already."""
        changes, self._changes[:] = list(self._changes), []
        for change in changes:
            if change.kind == "clear":
                for state in list(self._scopes.values()):
                    self._drop_scope(state)
            elif change.kind == "scope" and change.scope_key is not None:
                gone = self._scopes.get(change.scope_key)
                if gone is not None:
                    self._drop_scope(gone)
            elif change.kind == "delete":
                await self._forget(change.entry_ids, may_save=may_save)
            elif change.kind == "purge":
                forgotten = await self._forget(change.entry_ids, may_save=may_save)
                await self._compact_purged(forgotten)
            elif change.kind == "put" and change.entry is not None:
                await self._adopt([change.entry], from_files=False, may_save=may_save)
        return len(changes)

    async def _adopt(
        self, entries: list[Entry], *, from_files: bool, may_save: bool = True
    ) -> None:
        """Register entries read from the backend and index their vectors.

        A new scope gets an index built in one go (or, with ``from_files``, loaded
        from ``index_dir`` when the saved ids match exactly); an existing scope gets
        the new rows added and the known ones' expiry updated.
        """
        groups: dict[str, list[Entry]] = {}
        for entry in entries:
            groups.setdefault(entry.scope_key, []).append(entry)
        s = self._settings
        for key, group in groups.items():
            group.sort(key=lambda e: e.last_used)
            state = self._scopes.get(key)
            if state is None:
                state = ScopeState(key, group[0].scope_mode, scope_hash(key), None)
                self._scopes[key] = state
            async with state.lock:
                fresh: list[Entry] = []
                for e in group:
                    record = self._records.get(e.entry_id)
                    if record is None:
                        fresh.append(e)
                        self._add_record(
                            state,
                            e.entry_id,
                            e.owner,
                            e.parts,
                            e.query,
                            e.expires_at,
                            e.last_used,
                        )
                    else:
                        record.expires_at = e.expires_at
                        heapq.heappush(self._expiry, (e.expires_at, e.entry_id))
                if not fresh:
                    continue
                ids = [e.entry_id for e in fresh]
                if state.index is None and len(state) == len(fresh):
                    index: ScopeIndex | None = None
                    if from_files and s.index_dir and _saved(s.index_dir, key):
                        index_dir, expect = s.index_dir, set(ids)
                        load = partial(
                            load_index,
                            index_dir,
                            key,
                            self._dim,
                            expect=expect,
                            ef=s.hnsw_ef_search,
                        )
                        index = await anyio.to_thread.run_sync(load)
                        if index is None:  # stale or damaged: never load it again
                            await anyio.to_thread.run_sync(delete_saved, index_dir, key)
                    # Kept while the index is unchanged: unloading it again writes
                    # nothing (the first change deletes the files).
                    state.saved = index is not None
                    if index is None:
                        vectors = self._vectors_of(fresh)
                        index = await anyio.to_thread.run_sync(
                            self._build, ids, vectors
                        )
                    state.index = index
                    self._mark_hot(state)
                else:
                    target = await self._ensure_hot(state, may_save=may_save)
                    target.add(ids, self._vectors_of(fresh))
                    await self._maybe_promote(state)
        await self._unload_excess(may_save=may_save)

    async def _maybe_promote(self, state: ScopeState) -> None:
        """Rebuild a flat scope as hnswlib once it passes ``flat_max_entries``."""
        index = state.index
        if (
            isinstance(index, FlatIndex)
            and len(index) > self._settings.flat_max_entries
        ):
            await self._compact(state)


def _saved(index_dir: str, key: str) -> bool:
    # One stat inline instead of two thread hops for each of thousands of scopes.
    return file_base(index_dir, key).with_suffix(".json").exists()
