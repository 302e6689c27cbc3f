"""Telemetry and containment shared by the cache stages.

Each cache operation is a span named for its outcome (``cache.hit``, ``cache.miss``,
``cache.store``, ``cache.skip``, ``cache.error``) plus an event. Errors are contained
here, so the cache stages' own ``continue`` policy is a second line of defence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import Span, Status, StatusCode, Tracer

from stagecache._model import Turn
from stagecache.cache import Scope, SemanticCache
from stagecache.exporters._errors import record_error, safe_error_message
from stagecache.exporters._stdlog import get_logger
from stagecache.pipeline._events import CacheError, CacheSkip, EventBus
from stagecache.types import Embedder

__all__ = ["CacheOps", "Skip"]

_log = get_logger("stagecache.cache")


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a turn is not cacheable."""

    reason: str


class _Ctx(Protocol):
    cache: SemanticCache | None
    embedder: Embedder | None
    events: EventBus
    tracer: Tracer
    extras: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CacheOps:
    """The parts a cache stage needs, and how it reports."""

    cache: SemanticCache
    embedder: Embedder
    events: EventBus
    tracer: Tracer
    record_query: bool = False

    @classmethod
    def of(cls, ctx: _Ctx) -> CacheOps:
        assert ctx.cache is not None and ctx.embedder is not None
        return cls(
            ctx.cache,
            ctx.embedder,
            ctx.events,
            ctx.tracer,
            bool(ctx.extras.get("record_query_text", False)),
        )

    def scope_attributes(self, span: Span, scope: Scope, turn: Turn) -> None:
        """Attributes every cache span carries (never the raw user id)."""
        span.set_attribute("cache.scope", scope.hash)
        span.set_attribute("cache.scope_mode", scope.mode)
        span.set_attribute("stagecache.model", turn.model)
        span.set_attribute("cache.query_chars", len(turn.query))
        if self.record_query:
            span.set_attribute("cache.query", turn.query)

    def skip(self, turn: Turn, reason: str) -> None:
        """Mark ``turn`` as not cacheable, with a span and an event."""
        turn.cache.status, turn.cache.reason = "skip", reason
        mode = self.cache.settings.scope
        with self.tracer.start_as_current_span("cache.skip") as span:
            span.set_attribute("cache.reason", reason)
            span.set_attribute("cache.scope_mode", mode)
        if self.events.active:
            self.events.publish(
                CacheSkip(request_id=turn.request_id, reason=reason, scope_mode=mode)
            )
        _log.debug("cache skipped", reason=reason)

    def bookkeeping_failed(self, turn: Turn, operation: str, error: str) -> None:
        """Record a failed side write (a hit's recency update) that did not cost
        the outcome: on ``turn.errors`` and as a ``cache.error`` event."""
        kind = error.split(":", 1)[0]
        turn.errors.append(f"cache.{operation}: {error}")
        if self.events.active:
            self.events.publish(
                CacheError(
                    request_id=turn.request_id,
                    operation=operation,
                    error_type=kind,
                    message=error[:200],
                    scope_mode=self.cache.settings.scope,
                )
            )

    def cut_off(self, span: Span, operation: str, *, timed_out: bool) -> None:
        """Name ``span`` ``cache.error`` when the operation is cancelled.

        A stage timeout (a hung embedder) cancels the operation: its span ends as
        ``cache.error`` with ``error.type = TimeoutError`` and status ERROR (the
        runner records the stage's failure). A cancellation of the whole request
        (``timed_out`` false) is ``error.type = Cancelled``.
        """
        if not span.is_recording():
            return
        kind = "TimeoutError" if timed_out else "Cancelled"
        span.update_name("cache.error")
        span.set_attribute("cache.operation", operation)
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, kind))

    def error(self, turn: Turn, span: Span, operation: str, exc: BaseException) -> None:
        """Record a contained cache failure on ``turn``, ``span`` and the bus."""
        kind = "TimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__
        if operation == "lookup":
            turn.cache.status, turn.cache.reason = "error", f"{operation}: {kind}"
            if turn.answer_source == "cache":  # never answer from a failed lookup
                turn.answer, turn.answer_source = None, None
        span.update_name("cache.error")
        span.set_attribute("cache.operation", operation)
        span.set_attribute("error.type", kind)
        record_error(span, exc)
        span.set_status(Status(StatusCode.ERROR, kind))
        turn.errors.append(f"cache.{operation}: {kind}: {exc}")
        if self.events.active:
            self.events.publish(
                CacheError(
                    request_id=turn.request_id,
                    operation=operation,
                    error_type=kind,
                    message=safe_error_message(exc),
                    scope_mode=self.cache.settings.scope,
                )
            )
        # A broken log sink (a closed pipe) must not fail the turn.
        with contextlib.suppress(Exception):
            _log.warning(
                "cache operation failed; the request goes on without the cache",
                operation=operation,
                error_type=kind,
                error=safe_error_message(exc),
            )
