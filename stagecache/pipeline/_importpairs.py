"""Warming a cache in bulk with question/answer pairs (``pipeline.cache.import_pairs``).

Imported pairs go through the same guards as live traffic (a refused question is
rejected, answers are redacted) and get the same key parts a live request with the
same model and instructions gets (with no memory context), so they hit exactly where
a stored answer would. The summary is honest: ``stored`` is what the cache holds at
the end, and what the caps (``max_entries_per_user``, ``max_total_entries``) evicted
during the import is counted, imported entries and older ones apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from stagecache._model import Caller, Message, Turn
from stagecache.cache import SemanticCache
from stagecache.errors import InputError
from stagecache.pipeline._events import CacheEvicted, Event, EventBus
from stagecache.stages._keys import key_parts, user_source
from stagecache.types import Embedder, Stage

__all__ = ["ImportSummary", "PairImport"]


class ImportSummary(msgspec.Struct):
    """What :meth:`CacheAPI.import_pairs` (or ``import_entries``) did.

    Attributes:
        stored: imported entries the cache holds at the end of the import.
        skipped: pairs already in the cache (deduplicated).
        rejected: pairs refused: empty text, a guard refusal, not cacheable.
        evicted: imported entries the caps (``max_entries_per_user``,
            ``max_total_entries``) removed again during the import: 10,000 pairs
            into one user capped at 1,000 give ``stored=1000, evicted=9000``.
        displaced: older entries the caps removed to make room for the import.
        reasons: ``{reason: count}`` of the rejected pairs.
    """

    stored: int = 0
    skipped: int = 0
    rejected: int = 0
    evicted: int = 0
    displaced: int = 0
    reasons: dict[str, int] = {}


Pair = tuple[str, str] | dict[str, Any]

#: Cosine at which an imported question counts as already cached.
_DUPLICATE = 0.9999


class PairImport:
    """The bulk import of :class:`~stagecache.pipeline._cacheapi.CacheAPI`."""

    engine: SemanticCache
    guards: list[Stage]
    _embedder: Embedder
    _events: EventBus
    _model: str
    _instructions: str

    async def import_pairs(
        self,
        pairs: Iterable[Pair],
        *,
        caller: Caller,
        model: str | None = None,
        instructions: str | None = None,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Warm the cache with question/answer pairs for ``caller``'s scope.

        Args:
            pairs: ``(question, answer)`` tuples or ``{"question", "answer"}`` dicts.
            caller: whose scope receives the entries.
            model: model id to key on (default: the pipeline's).
            instructions: system prompt to key on (default: the pipeline's).
            batch_size: questions embedded per model call.
            progress: called with the number of pairs handled after each batch.

        Returns:
            Counts of stored (held at the end), evicted, displaced, skipped
            (already cached) and rejected pairs.
        """
        scope = self.engine.scope_for(caller)
        if isinstance(scope, str):
            raise InputError(f"caller: no cache scope for this caller ({scope})")
        summary = ImportSummary()
        evictions = _EvictionCount()
        unsubscribe = self._events.subscribe(evictions)
        stored: list[str] = []
        try:
            await self._import(
                pairs,
                caller,
                model,
                instructions,
                batch_size,
                progress,
                summary,
                stored,
            )
        finally:
            unsubscribe()
        written = list(dict.fromkeys(stored))
        summary.stored = sum(self.engine.has(i) for i in written)
        summary.evicted = len(written) - summary.stored
        summary.displaced = max(evictions.count - summary.evicted, 0)
        return summary

    async def _import(
        self,
        pairs: Iterable[Pair],
        caller: Caller,
        model: str | None,
        instructions: str | None,
        batch_size: int,
        progress: Callable[[int], None] | None,
        summary: ImportSummary,
        stored: list[str],
    ) -> None:
        scope = self.engine.scope_for(caller)
        batch: list[Turn] = []
        done = 0
        for item in pairs:
            turn = await self._prepare(item, caller, model, instructions, summary)
            if turn is not None:
                batch.append(turn)
            done += 1
            if len(batch) >= batch_size:
                await self._store_batch(batch, scope, summary, stored)
                batch = []
                if progress is not None:
                    progress(done)
        if batch:
            await self._store_batch(batch, scope, summary, stored)
        if progress is not None:
            progress(done)

    async def _prepare(
        self,
        item: Pair,
        caller: Caller,
        model: str | None,
        instructions: str | None,
        summary: ImportSummary,
    ) -> Turn | None:
        if isinstance(item, dict):
            question, answer = item.get("question"), item.get("answer")
        else:
            question, answer = item
        if not isinstance(question, str) or not isinstance(answer, str):
            return _reject(summary, "not_text")
        if not question.strip() or not answer.strip():
            return _reject(summary, "empty")
        turn = Turn(
            caller=caller,
            messages=[Message(role="user", content=question)],
            model=model or self._model,
            instructions=self._instructions if instructions is None else instructions,
        )
        for guard in self.guards:
            if guard.name == "output_guard":
                turn.answer, turn.answer_source = answer, "llm"
            turn = await guard(turn)
            if turn.stopped is not None:
                return _reject(summary, f"guard:{turn.stopped.reason}")
        if turn.answer is None:
            turn.answer, turn.answer_source = answer, "llm"
        return turn

    async def _store_batch(
        self, batch: list[Turn], scope: Any, summary: ImportSummary, stored: list[str]
    ) -> None:
        texts = [t.query for t in batch]
        user_id = getattr(scope, "user_id", None)
        if user_id and hasattr(self._embedder, "purge_sources"):
            # Tie the embedding-cache rows to the user the entries are attributed
            # to, so purge_user removes them with the entries.
            vectors = await self._embedder.embed(texts, sources=(user_source(user_id),))  # type: ignore[call-arg]
        else:
            vectors = await self._embedder.embed(texts)
        multi = self.engine.settings.cache_multi_turn
        for turn, vector in zip(batch, vectors, strict=True):
            parts = key_parts(turn, self._embedder.model_id, multi_turn=multi)
            # An exact duplicate already cached is skipped, not refreshed: importing
            # the same file twice must not rewrite answers users already get.
            found = await self.engine.lookup(scope, vector, parts, turn.query)
            if found.candidates and found.candidates[0].similarity >= _DUPLICATE:
                summary.skipped += 1
                continue
            entry_id = await self.engine.store(
                scope,
                turn.query,
                vector,
                parts,
                turn.answer or "",
                metadata={"source": "import", "model": turn.model},
                ttl_s=self.engine.ttl_for(turn.query),
            )
            if entry_id is not None:
                stored.append(entry_id)


class _EvictionCount:
    """Counts the entries the caps evict (``CacheEvicted`` with reason ``lru``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, CacheEvicted) and event.reason == "lru":
            self.count += event.count


def _reject(summary: ImportSummary, reason: str) -> Turn | None:
    """Count a rejected pair; returns None (no turn) for ``return _reject(...)``."""
    summary.rejected += 1
    summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
    return None
