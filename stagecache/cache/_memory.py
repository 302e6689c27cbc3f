"""The in-memory backend: a dict of entries, gone when the process exits.

It does not keep vectors (``stores_vectors = False``): the engine's indexes already
hold them, and a second copy would double the memory per entry (1.5 KiB at 384
dimensions), which matters at 100,000 entries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from stagecache.cache._backend import Change, Entry
from stagecache.cache._feedbacklog import FeedbackRecord, matches
from stagecache.cache._scope import OWNER_SEPARATOR, owner_key

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Entries in a dict, plus per-scope and per-owner id sets for bulk deletes.

    An owner is a user inside its tenant (``owner_key``).
    """

    __slots__ = ("_by_scope", "_by_user", "_entries", "_feedback")
    name = "memory"
    stores_vectors = False

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._by_scope: dict[str, set[str]] = {}
        self._by_user: dict[str, set[str]] = {}
        self._feedback: list[FeedbackRecord] = []

    async def open(self) -> None:
        """Nothing to open."""

    async def aclose(self) -> None:
        """Nothing to close (entries stay until the object is dropped)."""

    async def put(self, entry: Entry) -> None:
        """Insert or replace ``entry``."""
        old = self._entries.get(entry.entry_id)
        if old is not None:
            self._unlink(old)
        self._entries[entry.entry_id] = entry
        self._by_scope.setdefault(entry.scope_key, set()).add(entry.entry_id)
        owner = entry.owner
        if owner is not None:
            self._by_user.setdefault(owner, set()).add(entry.entry_id)

    async def put_many(self, entries: Sequence[Entry]) -> None:
        """Insert or replace many entries (the engine's group commit)."""
        for entry in entries:
            await self.put(entry)

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """The entries that exist among ``entry_ids``."""
        entries = self._entries
        return {i: entries[i] for i in entry_ids if i in entries}

    async def touch(
        self,
        entry_id: str,
        *,
        last_used: float,
        hits: int,
        positive: int,
        negative: int,
    ) -> None:
        """Update counters in place."""
        entry = self._entries.get(entry_id)
        if entry is not None:
            entry.last_used = last_used
            entry.hits = hits
            entry.positive = positive
            entry.negative = negative

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Delete by id; returns how many existed."""
        removed = 0
        for entry_id in entry_ids:
            entry = self._entries.pop(entry_id, None)
            if entry is not None:
                self._unlink(entry)
                removed += 1
        return removed

    async def delete_scope(self, scope_key: str) -> int:
        """Delete every entry of a scope."""
        return await self.delete(list(self._by_scope.get(scope_key, ())))

    async def delete_user(
        self, user_id: str, tenant: str | None = None, *, all_tenants: bool = False
    ) -> int:
        """Delete every entry attributed to ``user_id`` of ``tenant`` (None: no
        tenant), or of every tenant."""
        if all_tenants:
            owners = [
                o for o in self._by_user if o.rpartition(OWNER_SEPARATOR)[2] == user_id
            ]
        else:
            owners = [owner_key(tenant, user_id) or user_id]
        ids = [i for o in owners for i in self._by_user.get(o, ())]
        self._feedback = [
            r
            for r in self._feedback
            if r.user_id != user_id or not (all_tenants or r.tenant == tenant)
        ]
        return await self.delete(ids)

    async def clear(self) -> int:
        """Delete everything."""
        count = len(self._entries)
        self._entries.clear()
        self._by_scope.clear()
        self._by_user.clear()
        self._feedback.clear()
        return count

    async def add_feedback(self, record: FeedbackRecord) -> None:
        """Append one record to the feedback log."""
        self._feedback.append(record)

    async def feedback_records(
        self, user_id: str | None = None, tenant: str | None = None
    ) -> list[FeedbackRecord]:
        """The feedback log (of ``user_id`` of ``tenant`` when given), oldest first."""
        return [r for r in self._feedback if matches(r, user_id, tenant)]

    async def count(self) -> int:
        """Number of entries."""
        return len(self._entries)

    async def scan(
        self, scope_key: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[list[Entry]]:
        """Every entry (of one scope, or all), in batches."""
        if scope_key is None:
            items = list(self._entries.values())
        else:
            ids = self._by_scope.get(scope_key, ())
            items = [self._entries[i] for i in ids]
        for start in range(0, len(items), batch):
            yield items[start : start + batch]

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """A process-local store has no foreign writers: never calls back."""
        return _noop

    def _unlink(self, entry: Entry) -> None:
        for index, key in (
            (self._by_scope, entry.scope_key),
            (self._by_user, entry.owner),
        ):
            if key is None:
                continue
            ids = index.get(key)
            if ids is not None:
                ids.discard(entry.entry_id)
                if not ids:
                    del index[key]


def _noop() -> None:
    return None
