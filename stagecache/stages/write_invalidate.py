"""The write-invalidate stage: a turn that called a writing tool evicts its scope.

A tool whose spec says ``read_only_hint=False`` (or a tool the turn did not declare)
changed something: answers cached in the caller's scope may now be stale, so the
scope is evicted (``invalidate_on_write``, on by default).
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import msgspec
from opentelemetry.trace import Tracer

from stagecache._model import Turn
from stagecache._validate import CheckNumbers, Seconds
from stagecache.cache import SemanticCache
from stagecache.errors import ConfigError
from stagecache.pipeline._events import EventBus
from stagecache.stages._cacheops import CacheOps
from stagecache.types import Embedder, FailurePolicy

__all__ = ["WriteInvalidate", "WriteInvalidateConfig"]


class WriteInvalidateConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``write_invalidate`` stage."""

    timeout_s: Seconds | None = None


class _Ctx(Protocol):
    cache: SemanticCache | None
    embedder: Embedder | None
    events: EventBus
    tracer: Tracer
    extras: dict[str, Any]


class WriteInvalidate:
    """Evicts the caller's scope after a writing tool call."""

    __slots__ = ("_ops", "timeout_s")
    Config = WriteInvalidateConfig
    name = "write_invalidate"
    failure_policy: FailurePolicy = "continue"

    def __init__(
        self, ops: CacheOps, config: WriteInvalidateConfig | None = None
    ) -> None:
        self._ops = ops
        self.timeout_s = (config or WriteInvalidateConfig()).timeout_s

    @classmethod
    def from_config(cls, config: WriteInvalidateConfig, ctx: _Ctx) -> WriteInvalidate:
        if ctx.cache is None or ctx.embedder is None:
            raise ConfigError(
                "the write_invalidate stage needs a cache", field="stages"
            )
        return cls(CacheOps.of(ctx), config)

    async def __call__(self, turn: Turn) -> Turn:
        ops = self._ops
        if not ops.cache.settings.invalidate_on_write:
            return turn
        writes = [c.name for c in turn.tool_calls if not c.read_only_hint]
        if not writes:
            return turn
        scope = ops.cache.scope_for(turn.caller)
        if isinstance(scope, str):
            return turn
        with ops.tracer.start_as_current_span("cache.invalidate") as span:
            ops.scope_attributes(span, scope, turn)
            span.set_attribute("cache.write_tools", writes)
            try:
                with anyio.fail_after(ops.cache.settings.timeout_s):
                    count = await ops.cache.invalidate(scope, reason="write")
            except Exception as exc:
                ops.error(turn, span, "invalidate", exc)
                return turn
            # The engine publishes the Invalidated event (for every caller of it).
            span.set_attribute("cache.evicted", count)
        return turn
