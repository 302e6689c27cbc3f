"""``pipeline.cache``: what operators and applications do with the cache.

Purge a user, invalidate a scope, clear, give feedback on an entry; list, get,
delete, export and import entries (:mod:`stagecache.pipeline._entries`); count hits
and misses; and warm the cache in bulk with question/answer pairs
(:mod:`stagecache.pipeline._importpairs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from stagecache._model import Caller, Message, Turn
from stagecache.cache import SemanticCache
from stagecache.cache._backend import Entry
from stagecache.cache._explain import Explanation
from stagecache.cache._feedbacklog import FeedbackLog, FeedbackRecord
from stagecache.cache._scope import check_purge
from stagecache.errors import CacheError, InputError
from stagecache.exporters._pricing import ModelPrice
from stagecache.memory import MemoryStore
from stagecache.pipeline._entries import HitCounter, check_ids, iter_entries
from stagecache.pipeline._events import EventBus
from stagecache.pipeline._importpairs import ImportSummary, PairImport
from stagecache.stages._keys import key_parts, user_source
from stagecache.types import Embedder, Stage

__all__ = ["CacheAPI", "ImportSummary"]


class CacheAPI(PairImport):
    """Operator API of a pipeline's semantic cache."""

    def __init__(
        self,
        engine: SemanticCache,
        embedder: Embedder,
        memory: MemoryStore | None,
        *,
        events: EventBus,
        default_model: str,
        default_instructions: str = "",
        guards: Sequence[Stage] = (),
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self.engine = engine
        self._embedder = embedder
        self._memory = memory
        self._events = events
        self._model = default_model
        self._instructions = default_instructions
        self.guards = list(guards)
        self._hits = HitCounter(engine.tally, prices)
        events.subscribe(self._hits)

    async def purge_user(
        self, user_id: str, *, tenant: str | None = None, all_tenants: bool = False
    ) -> int:
        """Remove every trace of ``user_id`` of ``tenant``: entries in every scope
        they own, their vectors and saved index files, embedding-cache rows tied to
        them, and their memory facts. Returns the number of cache entries removed.

        Args:
            user_id: the user.
            tenant: the user's tenant. None is the user *without* a tenant: user
                "1001" of tenant "acme" is another user, purged with
                ``tenant="acme"``.
            all_tenants: purge the id in every tenant (and without one), e.g. for
                an erasure request; ``tenant`` must then be None.

        Embedding-cache rows are tied to the user id alone, so they go for every
        tenant of the id (they are a cache: a later query is embedded again).

        Raises:
            InputError: a bad id (see :class:`~stagecache.Caller`), or both
                ``tenant`` and ``all_tenants``.
        """
        check_purge(user_id, tenant, all_tenants)
        count = await self.engine.purge_user(
            user_id, tenant=tenant, all_tenants=all_tenants
        )
        purge_sources = getattr(self._embedder, "purge_sources", None)
        if purge_sources is not None:
            await _maybe_await(purge_sources(user_source(user_id)))
        if self._memory is not None:
            self._memory.forget_user(user_id, tenant=tenant, all_tenants=all_tenants)
        return count

    async def invalidate(self, caller: Caller) -> int:
        """Evict the scope ``caller`` maps to; returns the number of entries removed."""
        scope = self.engine.scope_for(caller)
        if isinstance(scope, str):
            raise InputError(f"caller: no cache scope for this caller ({scope})")
        return await self.engine.invalidate(scope, reason="operator")

    async def clear(self) -> int:
        """Remove every entry of every scope; returns how many."""
        return await self.engine.clear()

    async def feedback(
        self, entry_id: str, correct: bool, *, query: str | None = None
    ) -> bool:
        """Tell the cache whether the answer of ``entry_id`` was right.

        Negative feedback makes the entry harder to hit (and removes it past the
        configured limit). Returns whether the entry exists.

        Args:
            entry_id: the entry that answered (``result.cache.entry_id``).
            correct: whether its answer was right for the query.
            query: the query that got the hit. With it, the backend (memory,
                SQLite, Redis) keeps the pair in its feedback log, which
                ``stagecache tune`` trains on (a wrong hit: a negative pair).

        Raises:
            InputError: ``query`` is not a non-blank string.
        """
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise InputError(
                f"query: {query!r} is not a query; pass the text that got the hit "
                "(or leave it out)"
            )
        found = await self.engine.feedback(entry_id, correct, query=query)
        verifier = self.engine.verifier
        record = getattr(verifier, "record_feedback", None)
        if record is not None:
            record(entry_id, correct)
        return found  # the engine publishes the Feedback event

    async def feedback_records(
        self, user_id: str | None = None, *, tenant: str | None = None
    ) -> list[FeedbackRecord]:
        """The feedback log: every verdict given with the query that got the hit
        (of ``user_id`` and/or ``tenant`` when given), oldest first.

        Raises:
            CacheError: the backend keeps no feedback log (a custom backend
                without ``add_feedback`` and ``feedback_records``).
        """
        backend = self.engine.backend
        if not isinstance(backend, FeedbackLog):
            raise CacheError(
                f"the {backend.name} backend keeps no feedback log; feedback pairs "
                "are kept by the memory, sqlite and redis backends"
            )
        return await backend.feedback_records(user_id, tenant)

    async def remember(
        self, user_id: str, facts: str | Sequence[str], *, tenant: str | None = None
    ) -> int:
        """Add facts to the memory of ``user_id`` of ``tenant`` (changes the key of
        related queries); returns how many facts were new.

        Only a caller with the same user id *and* tenant finds them
        (``tenant=None``: the caller without a tenant).

        Raises:
            InputError: a bad id, an empty fact, or no memory store.
        """
        if self._memory is None:
            raise InputError("this pipeline has no memory store")
        return await self._memory.remember(user_id, facts, tenant=tenant)

    def facts(self, user_id: str, *, tenant: str | None = None) -> list[str]:
        """The facts remembered for ``user_id`` of ``tenant``, oldest first."""
        if self._memory is None:
            return []
        return self._memory.facts(user_id, tenant=tenant)

    def stats(self) -> dict[str, Any]:
        """Counts of the engine, and the lookups of every process sharing its
        backend.

        Hits and misses are counted per (scope mode, model) and added up in the
        backend (a table of the SQLite file, a hash of the Redis namespace), so
        they cover every process and survive restarts; this process's latest
        lookups are included, those of others as of this process's last write
        (at most a second old while it serves; :meth:`refresh_stats` reads them
        now). The memory backend counts this process's lookups only.

        Returns:
            ``entries``, ``scopes``, ``users`` ((tenant, user) pairs) and the other
            engine counts; ``hits``, ``misses``, ``hit_rate`` (None before any
            lookup), ``tokens_saved`` (usage stored with the entries that
            answered), ``cost_saved_usd`` (those tokens at the model's price;
            None, "unknown", when no hit had a price and a usage) and
            ``unpriced_hits`` (hits whose cost is unknown, not in
            ``cost_saved_usd``); the same under ``by_scope_mode`` and
            ``by_model``.
        """
        return {**self.engine.stats(), **self.engine.tally.summary()}

    async def refresh_stats(self) -> dict[str, Any]:
        """:meth:`stats` after writing this process's counts and reading every
        process's from the backend now (one round trip each)."""
        tally = self.engine.tally
        timeout = self.engine.settings.timeout_s
        await tally.flush(timeout)
        await tally.load(timeout)
        return self.stats()

    async def explain(
        self,
        query: str,
        *,
        caller: Caller,
        model: str | None = None,
        instructions: str | None = None,
        k: int = 5,
    ) -> Explanation:
        """Why ``query`` from ``caller`` would hit or miss, changing nothing.

        The query goes through the pipeline's input guards (a redaction changes
        what is looked up) and is embedded; the lookup's own search, rules and
        verifier then judge the ``k`` nearest entries of the caller's scope (see
        :class:`~stagecache.cache.Explanation`). Memory facts do not join the key
        here: an entry keyed with a memory context shows as ``key_mismatch``.

        Args:
            query: the question.
            caller: who asks (their scope is searched).
            model: the model id of the request (default: the pipeline's).
            instructions: the system instructions (default: the pipeline's).
            k: how many of the nearest entries to list (1 to 100).

        Raises:
            InputError: an empty query, a bad ``k``, a caller without a scope, or a
                query an input guard stops (the guard's reason is named).
        """
        if not isinstance(query, str) or not query.strip():
            raise InputError("query: expected a non-empty question")
        scope = self.engine.scope_for(caller)
        if isinstance(scope, str):
            raise InputError(f"caller: no cache scope for this caller ({scope})")
        turn = Turn(
            caller=caller,
            messages=[Message(role="user", content=query)],
            model=model or self._model,
            instructions=self._instructions if instructions is None else instructions,
        )
        for guard in self.guards:
            if guard.name == "output_guard":
                continue
            turn = await guard(turn)
            if turn.stopped is not None:
                raise InputError(
                    f"query: stopped by {guard.name} ({turn.stopped.reason}); "
                    "it never reaches the cache"
                )
        parts = key_parts(
            turn,
            self._embedder.model_id,
            multi_turn=self.engine.settings.cache_multi_turn,
        )
        (vector,) = await self._embedder.embed([turn.query])
        return await self.engine.explain(scope, vector, parts, turn.query, k=k)

    # -- entries -----------------------------------------------------------------

    async def open_store(self) -> None:
        """Open the cache alone, without loading the embedding model.

        For operator work (list, show, delete, export, feedback) outside a running
        pipeline: the engine's dimension is taken from the stored vectors. Close
        it with :meth:`close_store`.
        """
        backend = self.engine.backend
        await backend.open()
        if backend.stores_vectors:
            async with aclosing(backend.scan()) as batches:  # type: ignore[type-var]
                async for batch in batches:
                    if batch and batch[0].vector:
                        self.engine.dim = len(batch[0].vector) // 4
                    break
        await self.engine.warm_up()

    async def close_store(self) -> None:
        """Close what :meth:`open_store` opened (and the embedding-cache file a
        purge may have opened)."""
        await self.engine.aclose()
        close = getattr(self._embedder, "aclose", None)
        if close is not None:
            await close()

    async def entries(
        self,
        *,
        user_id: str | None = None,
        tenant: str | None = None,
        scope_mode: str | None = None,
    ) -> list[Entry]:
        """The stored entries (expired ones until swept), optionally filtered.

        Args:
            user_id: only this user's entries.
            tenant: only this tenant's entries (None: any tenant).
            scope_mode: only ``per_user``, ``per_session`` or ``shared`` entries.
        """
        return [
            e
            async for e in iter_entries(
                self.engine, user_id=user_id, tenant=tenant, scope_mode=scope_mode
            )
        ]

    async def get(self, entry_id: str) -> Entry | None:
        """The entry ``entry_id`` (question, answer, key parts, metadata,
        timestamps, counters), or None."""
        (entry_id,) = check_ids([entry_id])
        return (await self.engine.backend.get_many([entry_id])).get(entry_id)

    async def delete(self, entry_ids: str | Sequence[str]) -> int:
        """Remove entries by id; returns how many existed and went."""
        ids = check_ids([entry_ids] if isinstance(entry_ids, str) else entry_ids)
        return await self.engine.delete(ids)

    async def import_entries(self, entries: Iterable[Entry]) -> ImportSummary:
        """Write exported entries as they are (same ids, scopes, key parts,
        timestamps): the inverse of exporting :meth:`entries`.

        The caps apply: ``stored`` counts the imported entries held at the end,
        ``evicted`` those the caps removed again, ``displaced`` older ones.
        """
        batch = list(entries)
        removed = await self.engine.adopt_entries(batch)
        ids = {e.entry_id for e in batch}
        stored = sum(self.engine.has(i) for i in ids)
        evicted = len(ids) - stored
        return ImportSummary(
            stored=stored, evicted=evicted, displaced=max(removed - evicted, 0)
        )


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value
