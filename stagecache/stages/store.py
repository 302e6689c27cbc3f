"""The store stage: on a miss, store the post-guard answer, if it is fit to replay.

It runs after the output guard, so what it stores is what the caller got. It
stores nothing for a hit, a skip, a refused or failed turn, or an empty answer, and
nothing that would poison the cache (``docs/guards.md``, "What is never stored"):

- ``unfinished``: the model did not stop normally (``finish_reason`` ``length``,
  ``content_filter``, ``tool_calls``, ...);
- ``write_tool_call``: the turn called a writing tool (the answer describes a change
  of state; write-invalidate evicts the scope right after);
- ``uncacheable_tool``: the turn called a read-only tool not listed in
  ``cacheable_tools`` (a live price or search result: on a hit the tool never runs);
- ``guard_findings``: a guard flagged the input or redacted the answer;
- ``answer_too_long``: longer than ``max_answer_chars``;
- ``transient_error``: a short answer that reads as an error message ("Service
  temporarily unavailable", "Rate limit exceeded");
- ``no_store``: the request's cache control says ``no-store``.

A cache control ``ttl`` replaces the TTL rules for the stored entry.

The reason is logged at debug level and kept in ``turn.scratch["store_skipped"]``.
The write itself is shielded from cancellation inside the cache engine, so a
cancelled request leaves either a whole entry or none.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Protocol

import anyio
import msgspec
from opentelemetry.trace import Tracer

from stagecache._model import Turn
from stagecache._validate import Chars, CheckNumbers, Seconds
from stagecache.cache import SemanticCache
from stagecache.errors import ConfigError
from stagecache.guards._storable import transient_error, unfinished
from stagecache.pipeline._events import CacheStore, EventBus
from stagecache.stages._cacheops import CacheOps
from stagecache.stages.cache_check import PARTS, SCOPE
from stagecache.types import Embedder, FailurePolicy

__all__ = ["Store", "StoreConfig"]

_log = logging.getLogger("stagecache.cache")
#: Where the store stage leaves the reason it did not store a fresh answer.
STORE_SKIPPED = "store_skipped"
#: Where a model client may leave string labels for the entry it answered (the
#: LangChain integration keeps its serialised generations there); the stage's own
#: labels (model, token counts) win.
ENTRY_METADATA = "entry_metadata"


class StoreConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``store`` stage.

    Attributes:
        max_answer_chars: longer answers are not stored.
        timeout_s: the stage's own limit.
        cacheable_tools: names of read-only tools whose results may be replayed
            from the cache (static lookups such as ``search_docs``). A turn that
            called any other tool is not stored.
        transient_max_chars: answers up to this long are checked for transient
            error texts ("Service temporarily unavailable"); 0 switches the
            check off.
    """

    max_answer_chars: Chars = 100_000
    timeout_s: Seconds | None = None
    cacheable_tools: list[Annotated[str, msgspec.Meta(min_length=1)]] = []
    transient_max_chars: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 300


class _Ctx(Protocol):
    cache: SemanticCache | None
    embedder: Embedder | None
    events: EventBus
    tracer: Tracer
    extras: dict[str, Any]


class Store:
    """Stores a fresh, guarded answer under the turn's scope and key."""

    __slots__ = ("_max", "_ops", "_tools", "_transient_chars", "timeout_s")
    Config = StoreConfig
    name = "store"
    failure_policy: FailurePolicy = "continue"

    def __init__(self, ops: CacheOps, config: StoreConfig | None = None) -> None:
        config = config or StoreConfig()
        self._ops = ops
        self._max = config.max_answer_chars
        self._tools = _cacheable_tools(config.cacheable_tools)
        self._transient_chars = config.transient_max_chars
        if isinstance(self._transient_chars, bool) or not (
            isinstance(self._transient_chars, int) and self._transient_chars >= 0
        ):
            # Structs built in Python skip msgspec's decode-time constraints.
            raise ConfigError(
                "must be a whole number of characters >= 0 (0 switches the check "
                f"off), got {self._transient_chars!r}",
                field="transient_max_chars",
            )
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
        if unfinished(turn.finish_reason):
            return "unfinished"
        if any(not call.read_only_hint for call in turn.tool_calls):
            return "write_tool_call"
        if any(call.name not in self._tools for call in turn.tool_calls):
            return "uncacheable_tool"
        if turn.findings:
            # A block, a flagged input, a redacted answer: the answer is suspect
            # or degraded; it is served once, never replayed.
            return "guard_findings"
        if len(turn.answer) > self._max:
            return "answer_too_long"
        if transient_error(turn.answer, self._transient_chars) is not None:
            return "transient_error"
        return None

    async def __call__(self, turn: Turn) -> Turn:
        why = self._why_not(turn)
        if why is not None:
            if why not in ("not_a_miss", "no_fresh_answer"):
                turn.scratch[STORE_SKIPPED] = why
                _log.debug("answer not stored: %s", why)
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
                            **_labels(turn.scratch.get(ENTRY_METADATA)),
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


def _labels(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _cacheable_tools(names: object) -> frozenset[str]:
    if not isinstance(names, list | tuple | set | frozenset):
        raise ConfigError(
            f"must be a list of tool names, got {names!r:.80}",
            field="cacheable_tools",
        )
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"must be a non-empty tool name, got {name!r:.80}",
                field=f"cacheable_tools[{i}]",
            )
    return frozenset(names)
