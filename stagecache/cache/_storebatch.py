"""Batched stores: the engine's side of group commit (see ``_groupcommit``).

Concurrent ``store`` calls queue up; the writer of the moment commits every queued
item in one pass under the write lock, in chunks:

1. plan, in memory and in arrival order: an item whose (scope, parts, normalised
   query), or vector at cosine >= 0.9999, matches an existing entry refreshes it;
   one matching an item planned earlier in the chunk joins it (the last store's
   answer and TTL win, as if they had run one after the other); others are new.
   A chunk ends before a new entry that would by itself push its user or the
   cache past a cap, so eviction within a chunk never has to evict the chunk;
2. evict least recently used entries for the chunk's new entries (entries the
   chunk refreshes go last);
3. write every new and refreshed entry in one backend call (``put_many`` where the
   backend has it, else one ``put`` each), bounded by ``timeout_s``;
4. only then index and record them (backend before memory, as everywhere).

A failing chunk fails every request it (or a later chunk) holds, with the
backend's typed error; requests committed in earlier chunks keep their ids. Each
chunk first applies the changes a shared backend reported; a backend without
``put_many`` (redis) gets one item per chunk, so its own evictions are known
before its next write, as when each store took the lock by itself.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
from numpy.typing import NDArray

from stagecache.cache._backend import Entry
from stagecache.cache._core import new_entry_id
from stagecache.cache._groupcommit import GroupCommit
from stagecache.cache._index import FlatIndex
from stagecache.cache._maintain import Maintenance
from stagecache.cache._scope import Scope, query_key
from stagecache.cache._state import ScopeState

if TYPE_CHECKING:
    from stagecache.cache._engine import StoreItem

__all__ = ["DEDUPE_COSINE", "INLINE_SEARCH_MAX", "BatchedStore"]

# Flat searches up to this many rows, and every hnswlib search (0.07-0.2 ms for one
# query even at 100k entries), run inline: less than a worker-thread round trip
# (0.05 ms idle, far more on a busy loop). Bigger flat searches (a scope between
# this and its promotion to hnswlib) go to a worker thread.
# Measured in benchmarks/results/index.md and benchmarks/results/peers.md.
INLINE_SEARCH_MAX = 2048
# A stored vector this close to an existing one (same parts) refreshes that entry.
DEDUPE_COSINE = 0.9999
# Items planned per chunk at most (one backend write each).
CHUNK_MAX = 1024
# Items of one scope searched together for duplicates (one lock, one thread hop).
SEARCH_GROUP = 256
# Calls of at most this many items search for their duplicates before queueing.
HINT_MAX = 16
# Scopes remembered as written since a hint was taken (then all hints go stale).
ADDED_MAX = 4096

Vector = NDArray[np.float32]
Neighbours = list[tuple[str, float]]
# (write sequence number when searched, the nearest entries of the item's scope)
Hint = tuple[int, Neighbours]
Work = tuple[Sequence["StoreItem"], list[Vector], list[Hint | None]]
Outcome = list[str | None]
Flat = list[tuple[int, int, "StoreItem", Vector, Hint | None]]


class _Slot:
    """One entry a chunk writes: new, or an existing one refreshed."""

    __slots__ = ("entry_id", "first", "last", "new", "ttl", "vector")

    def __init__(
        self, entry_id: str, item: StoreItem, vector: Vector, *, new: bool
    ) -> None:
        self.entry_id = entry_id
        self.new = new
        self.first = item  # scope, query, parts and vector of a new entry
        self.vector = vector
        self.last = item  # answer and metadata: the last store wins
        self.ttl = 0.0


class _Planned:
    """The new entries a chunk plans in one scope, for vector de-duplication."""

    __slots__ = ("matrix", "slots")

    def __init__(self, dim: int) -> None:
        self.matrix = np.empty((8, dim), dtype=np.float32)
        self.slots: list[_Slot] = []

    def add(self, slot: _Slot) -> None:
        n = len(self.slots)
        if n == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.empty_like(self.matrix)])
        self.matrix[n] = slot.vector
        self.slots.append(slot)

    def near(self, item: StoreItem, v: Vector) -> _Slot | None:
        n = len(self.slots)
        if not n:
            return None
        sims = self.matrix[:n] @ v
        for i in np.flatnonzero(sims >= DEDUPE_COSINE):
            first = self.slots[int(i)].first
            if first.parts == item.parts and first.scope.owner == item.scope.owner:
                return self.slots[int(i)]
        return None


class BatchedStore(Maintenance):
    """Stores through a group commit (see the module docstring)."""

    _group: GroupCommit[Work, Outcome] | None = None
    # Hints: a counter of chunks that added entries, the last one per scope (up to
    # ADDED_MAX scopes) and the oldest number a hint may still carry.
    _seq: int = 0
    _floor: int = 0
    _added: dict[str, int] | None = None

    async def _store_queued(
        self, items: Sequence[StoreItem], vectors: list[Vector]
    ) -> Outcome:
        """Queue a validated ``store_many`` call for the next group commit.

        A small call first looks for its duplicates itself (a hint), while it holds
        no lock: the writer then only searches again where a chunk has written to
        that scope since, and a batch of 1,000 stores does not run 1,000 searches
        in a row while every caller waits.
        """
        hints: list[Hint | None] = [None] * len(items)
        if len(items) <= HINT_MAX:
            for i, (item, v) in enumerate(zip(items, vectors, strict=True)):
                state = self._scopes.get(item.scope.key)
                if state is None or not len(state):
                    continue
                qkey = query_key(item.query, item.parts, item.scope.owner)
                if qkey in state.by_qkey:
                    continue  # the writer finds it without a search
                seq = self._seq
                hints[i] = (seq, (await self._neighbours(state, [v]))[0])
        return await self._stores.submit((items, vectors, hints))

    def _hint_valid(self, key: str, hint: Hint) -> bool:
        seq = hint[0]
        added = self._added or {}
        return seq >= self._floor and added.get(key, -1) <= seq

    def _note_added(self, key: str) -> None:
        self._seq += 1
        if self._added is None:
            self._added = {}
        elif len(self._added) >= ADDED_MAX:
            self._added.clear()
            self._floor = self._seq
        self._added[key] = self._seq

    @property
    def _stores(self) -> GroupCommit[Work, Outcome]:
        if self._group is None:
            self._group = GroupCommit(self._commit_stores, lambda: self._write_lock)
        return self._group

    async def _settle_stores(self) -> None:
        """Let every store issued before now land first (invalidation ordering)."""
        if self._group is not None:
            await self._group.settle()

    # Removals wait for the stores issued before them, so a store queued before a
    # write-invalidate (or a purge) never lands after it and survives it.

    async def invalidate(self, scope: Scope, *, reason: str = "write") -> int:
        """Remove every entry of ``scope``; returns the count.

        Stores issued before this call land first, so this removes them too.

        Args:
            scope: a :class:`~stagecache.cache.Scope`.
            reason: why (``write`` for a writing tool call); in the event.
        """
        await self._settle_stores()
        return await super().invalidate(scope, reason=reason)

    async def purge_user(
        self, user_id: str, *, tenant: str | None = None, all_tenants: bool = False
    ) -> int:
        """Remove every entry attributed to ``user_id`` in any scope mode.

        Stores issued before this call land first, so this removes them too.
        Entries, vectors (hnswlib graphs touched are compacted, so no deleted
        vector lingers) and saved index files go. Returns the number of entries.

        Args:
            user_id: the user.
            tenant: the user's tenant; None is the user without a tenant (user
                "1001" of tenant "acme" is another user).
            all_tenants: remove the user's entries in every tenant (an erasure
                of the id everywhere); ``tenant`` must then be None.

        Raises:
            InputError: a bad id, or both ``tenant`` and ``all_tenants``.
        """
        await self._settle_stores()
        return await super().purge_user(user_id, tenant=tenant, all_tenants=all_tenants)

    async def clear(self) -> int:
        """Remove everything (entries, indexes, saved files); returns the count.

        Stores issued before this call land first, so this removes them too.
        """
        await self._settle_stores()
        return await super().clear()

    # -- the commit ------------------------------------------------------------------

    async def _commit_stores(self, works: list[Work]) -> list[Outcome | BaseException]:
        """Commit a batch of ``store_many`` calls; one outcome per call."""
        flat: Flat = [
            (w, i, item, v, hint)
            for w, (items, vectors, hints) in enumerate(works)
            for i, (item, v, hint) in enumerate(zip(items, vectors, hints, strict=True))
        ]
        results: list[Outcome] = [[None] * len(items) for items, _, _ in works]
        errors: list[BaseException | None] = [None] * len(works)
        pos = 0
        while pos < len(flat):
            try:
                pos = await self._store_chunk(flat, pos, results)
            except Exception as exc:
                for w, *_ in flat[pos:]:
                    errors[w] = errors[w] or exc
                break
        return [errors[w] or results[w] for w in range(len(works))]

    async def _store_chunk(
        self,
        flat: Flat,
        pos: int,
        results: list[Outcome],
    ) -> int:
        """Plan, write and apply the chunk from ``flat[pos]``; returns its end."""
        s = self._settings
        if self._changes:
            await self._apply_changes_locked()
        now = self._now()
        await self._sweep(now)
        slots: dict[str, _Slot] = {}
        by_qkey: dict[tuple[str, int], _Slot] = {}
        planned: dict[str, _Planned] = {}
        assigned: list[tuple[int, _Slot | None]] = []
        found: dict[int, Neighbours] = {}
        new_per_user: Counter[str] = Counter()
        n_new = 0
        # Without put_many each entry is its own write anyway: one item per chunk
        # applies the changes a shared backend reported (its own evictions) before
        # the next write, as when every store took the lock by itself.
        batched = getattr(self._backend, "put_many", None) is not None
        end = min(len(flat), pos + (CHUNK_MAX if batched else 1))
        for j in range(pos, end):
            _, _, item, v, _ = flat[j]
            ttl = item.ttl_s if item.ttl_s is not None else self.ttl_for(item.query)
            if ttl <= 0:
                assigned.append((j, None))
                continue
            key, user = item.scope.key, item.scope.owner
            qkey = query_key(item.query, item.parts, user)
            scope_plan = planned.get(key)
            slot = by_qkey.get((key, qkey))
            if slot is None and scope_plan is not None:
                slot = scope_plan.near(item, v)
            if slot is None:
                existing = await self._existing(flat, j, end, qkey, found)
                if existing is not None:
                    slot = slots.get(existing)
                    if slot is None:
                        slot = slots[existing] = _Slot(existing, item, v, new=False)
            if slot is None:
                if n_new >= s.max_total_entries or (
                    user is not None and new_per_user[user] >= s.max_entries_per_user
                ):
                    end = (
                        j  # the rest goes to the next chunk, after this one's eviction
                    )
                    break
                slot = _Slot(new_entry_id(), item, v, new=True)
                slots[slot.entry_id] = by_qkey[(key, qkey)] = slot
                if scope_plan is None:
                    scope_plan = planned[key] = _Planned(self._dim)
                scope_plan.add(slot)
                n_new += 1
                if user is not None:
                    new_per_user[user] += 1
            slot.last, slot.ttl = item, ttl
            assigned.append((j, slot))
        if slots and not await self._write_slots(list(slots.values()), now):
            return pos  # entries lost by the backend: plan again, they are new now
        for j, maybe in assigned:
            w, i, _, _, _ = flat[j]
            results[w][i] = maybe.entry_id if maybe is not None else None
        return end

    async def _existing(
        self,
        flat: Flat,
        j: int,
        end: int,
        qkey: int,
        found: dict[int, Neighbours],
    ) -> str | None:
        """The existing entry item ``j`` refreshes (same query, or same vector)."""
        item = flat[j][2]
        state = self._scopes.get(item.scope.key)
        if state is None or not len(state):
            return None
        entry_id = state.by_qkey.get(qkey)
        if entry_id is not None:
            return entry_id
        hint = flat[j][4]
        if hint is not None and self._hint_valid(item.scope.key, hint):
            found[j] = hint[1]
        elif j not in found:
            # Search this item and the next ones of the scope together.
            group = [
                k for k in range(j, end) if flat[k][2].scope.key == item.scope.key
            ][:SEARCH_GROUP]
            hits = await self._neighbours(state, [flat[k][3] for k in group])
            found.update(zip(group, hits, strict=True))
        user, parts = item.scope.owner, item.parts
        for other, sim in found.pop(j):
            if sim < DEDUPE_COSINE:
                break
            record = self._records.get(other)
            if (
                record is not None
                and record.state is state
                and record.parts == parts
                and record.owner == user
            ):
                return other
        return None

    async def _neighbours(
        self, state: ScopeState, vectors: list[Vector]
    ) -> list[Neighbours]:
        await _lock(state.lock)
        try:
            index = await self._ensure_hot(state)

            def run() -> list[Neighbours]:
                return [index.search(v, 4) for v in vectors]

            if not isinstance(index, FlatIndex) or len(index) <= INLINE_SEARCH_MAX:
                return run()
            return await anyio.to_thread.run_sync(run)
        finally:
            state.lock.release()

    async def _write_slots(self, slots: list[_Slot], now: float) -> bool:
        """Evict, write and apply ``slots``; False if refreshed entries were lost."""
        old = [slot for slot in slots if not slot.new]
        current: dict[str, Entry] = {}
        if old:
            current = await self._backend.get_many([slot.entry_id for slot in old])
            lost = [
                slot.entry_id
                for slot in old
                if slot.entry_id not in current or slot.entry_id not in self._records
            ]
            if lost:  # a foreign delete: forget them and store those items afresh
                await self._remove([i for i in lost if i in self._records], "missing")
                return False
        new = [slot for slot in slots if slot.new]
        if new:
            await self._remove(self._victims(new, {s.entry_id for s in old}), "lru")
        # An entry this chunk refreshes may have been evicted to make room (the cap
        # left no other choice): its callers still get its id, as if it had been
        # refreshed, then evicted.
        old = [slot for slot in old if slot.entry_id in self._records]
        entries = [self._entry_of(slot, now) for slot in new]
        for slot in old:
            entry = current[slot.entry_id]
            entry.answer = slot.last.answer
            entry.metadata = dict(slot.last.metadata)
            entry.created_at = now
            entry.expires_at = now + slot.ttl
            entry.last_used = now
            entries.append(entry)
        with anyio.fail_after(self._io_timeout):
            await self._put_many(entries)
        await self._index_new(new, now)
        for slot in old:
            record = self._records.get(slot.entry_id)
            if record is not None:
                record.expires_at = now + slot.ttl
                self._touch(slot.entry_id, record, now)
                heapq.heappush(self._expiry, (now + slot.ttl, slot.entry_id))
        await self._unload_excess()
        return True

    def _victims(self, new: list[_Slot], protect: set[str]) -> list[str]:
        """Least recently used ids to evict so ``new`` fits the caps."""
        s, records = self._settings, self._records
        incoming = Counter(
            slot.first.scope.owner for slot in new if slot.first.scope.owner is not None
        )
        victims: list[str] = []
        for user, n in incoming.items():
            mine = self._by_user.get(user, set())
            excess = len(mine) + n - s.max_entries_per_user
            if excess > 0:

                def rank(i: str) -> tuple[bool, float]:
                    return (i in protect, records[i].last_used)

                victims.extend(heapq.nsmallest(excess, mine, key=rank))
        excess = len(records) - len(victims) + len(new) - s.max_total_entries
        if excess > 0:
            chosen = set(victims)
            for last_resort in (False, True):
                for entry_id in records:  # oldest first
                    if excess <= 0:
                        break
                    if entry_id not in chosen and (entry_id in protect) == last_resort:
                        victims.append(entry_id)
                        chosen.add(entry_id)
                        excess -= 1
        return victims

    def _entry_of(self, slot: _Slot, now: float) -> Entry:
        first, last = slot.first, slot.last
        scope = first.scope
        return Entry(
            entry_id=slot.entry_id,
            scope_key=scope.key,
            scope_mode=scope.mode,
            user_id=scope.user_id,
            tenant=scope.tenant,
            query=first.query,
            answer=last.answer,
            parts=first.parts,
            vector=slot.vector.tobytes() if self._backend.stores_vectors else b"",
            metadata=dict(last.metadata),
            created_at=now,
            expires_at=now + slot.ttl,
            last_used=now,
        )

    async def _put_many(self, entries: list[Entry]) -> None:
        """One backend write for the chunk (one ``put`` each where no ``put_many``)."""
        put_many: Any = getattr(self._backend, "put_many", None)
        if put_many is not None:
            await put_many(entries)
            return
        for entry in entries:
            await self._backend.put(entry)

    async def _index_new(self, new: list[_Slot], now: float) -> None:
        """Index and record the new entries, one scope lock each."""
        groups: dict[str, list[_Slot]] = {}
        for slot in new:
            groups.setdefault(slot.first.scope.key, []).append(slot)
        for key, group in groups.items():
            self._note_added(key)
            scope = group[0].first.scope
            state = self._scopes.get(key)  # eviction may have dropped it
            if state is None:
                state = ScopeState(key, scope.mode, scope.hash, FlatIndex(self._dim))
                self._scopes[key] = state
            await _lock(state.lock)
            try:
                index = await self._ensure_hot(state)
                ids = [slot.entry_id for slot in group]
                index.add(ids, np.stack([slot.vector for slot in group]))
                for slot in group:
                    self._add_record(
                        state,
                        slot.entry_id,
                        scope.owner,
                        slot.first.parts,
                        slot.first.query,
                        now + slot.ttl,
                        now,
                    )
                await self._maybe_promote(state)
            finally:
                state.lock.release()


async def _lock(lock: anyio.Lock) -> None:
    """Take ``lock`` without a trip round the event loop when it is free.

    A batch takes one scope lock per scope it touches; on a loop busy with a
    burst, each ``async with`` checkpoint costs a full round of the ready tasks.
    """
    try:
        lock.acquire_nowait()
    except anyio.WouldBlock:
        await lock.acquire()
