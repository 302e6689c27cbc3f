"""The store stage: on a miss, store the post-guard answer.

It runs after the output guard, so what it stores is what the caller got (PII
already redacted). It stores nothing for a hit, a skip, a refused or failed turn, an
empty answer, a turn that called a writing tool (that answer describes a change
of state; write-invalidate evicts the scope right after), or one whose cache
control says ``no-store``. A cache control ``ttl`` replaces the TTL rules. The
write itself is shielded from cancellation inside the cache engine, so a cancelled
request leaves either a whole entry or none.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import msgspec
from opentelemetry.trace import Tracer

from stagecache._model import Turn
from stagecache._validate import Chars, CheckNumbers, Seconds
from stagecache.cache import SemanticCache
from stagecache.errors import ConfigError
from stagecache.pipeline._events import CacheStore, EventBus
from stagecache.stages._cacheops import CacheOps
from stagecache.stages.cache_check import PARTS, SCOPE
from stagecache.types import Embedder, FailurePolicy

__all__ = ["Store", "StoreConfig"]


class StoreConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``store`` stage.

    Attributes:
        max_answer_chars: longer answers are not stored.
        timeout_s: the stage's own limit.
    """

    max_answer_chars: Chars = 100_000
    timeout_s: Seconds | None = None


class _Ctx(Protocol):
    cache: SemanticCache | None
    embedder: Embedder | None
    events: EventBus
    tracer: Tracer
    extras: dict[str, Any]


class Store:
    """Stores a fresh, guarded answer under the turn's scope and key."""

    __slots__ = ("_max", "_ops", "timeout_s")
    Config = StoreConfig
    name = "store"
    failure_policy: FailurePolicy = "continue"

    def __init__(self, ops: CacheOps, config: StoreConfig | None = None) -> None:
        config = config or StoreConfig()
        self._ops = ops
        self._max = config.max_answer_chars
        self.timeout_s = config.timeout_s

    @classmethod
    def from_config(cls, config: StoreConfig, ctx: _Ctx) -> Store:
        if ctx.cache is None or ctx.embedder is None:
            raise ConfigError("the store stage needs a cache", field="stages")
        return cls(CacheOps.of(ctx), config)

    def _why_not(self, turn: Turn) -> str | None:
        if turn.cache.status != "miss" or SCOPE not in turn.scratch:
            return "not_a_miss"
        if turn.answer_source != "llm" or not turn.answer:
            return "no_fresh_answer"
        if turn.cache_control is not None and turn.cache_control.no_store:
            return "no_store"
        if any(not call.read_only_hint for call in turn.tool_calls):
            return "write_tool_call"
        if any(f.action == "block" for f in turn.findings):
            return "blocked"
        if len(turn.answer) > self._max:
            return "answer_too_long"
        return None

    async def __call__(self, turn: Turn) -> Turn:
        if self._why_not(turn) is not None:
            return turn
        ops = self._ops
        scope, parts = turn.scratch[SCOPE], turn.scratch[PARTS]
        control = turn.cache_control
        ttl = (
            control.ttl
            if control is not None and control.ttl is not None
            else ops.cache.ttl_for(turn.query)
        )
        with ops.tracer.start_as_current_span("cache.store") as span:
            ops.scope_attributes(span, scope, turn)
            span.set_attribute("cache.ttl_s", ttl)
            try:
                with anyio.fail_after(ops.cache.settings.timeout_s):
                    entry_id = await ops.cache.store(
                        scope,
                        turn.query,
                        turn.embedding,
                        parts,
                        turn.answer or "",
                        metadata={
                            "model": turn.model,
                            "prompt_tokens": str(turn.usage.prompt_tokens),
                            "completion_tokens": str(turn.usage.completion_tokens),
                        },
                        ttl_s=ttl,
                    )
            except Exception as exc:
                ops.error(turn, span, "store", exc)
                return turn
            if entry_id is None:
                span.set_attribute("cache.deduplicated", True)
                return turn
            span.set_attribute("cache.entry_id", entry_id)
            turn.cache.stored, turn.cache.entry_id = True, entry_id
            if ops.events.active:
                ops.events.publish(
                    CacheStore(
                        request_id=turn.request_id,
                        scope=scope.hash,
                        scope_mode=scope.mode,
                        entry_id=entry_id,
                        ttl_s=ttl,
                        answer_chars=len(turn.answer or ""),
                    )
                )
        return turn
