"""The cache-check stage: embed the query, search the caller's scope, maybe answer.

On a hit the turn gets the cached answer (the LLM stage then does nothing; the
output guard still runs over it). On a miss the stage leaves what the store stage
needs in ``turn.scratch``. Every outcome is a span (``cache.hit``, ``cache.miss``,
``cache.skip``, ``cache.error``) and an event. The scope appears only as a hash.

Not cacheable (``cache.skip``): no user id under a non-shared scope; history in the
request while ``cache_multi_turn`` is off; a memory search that failed (the context
fingerprint cannot be trusted); a request parameter the policy does not cache
(``n > 1``, ``logprobs``: reason ``param_<name>``); ``no-cache`` with ``no-store``.

Per-request cache control (``turn.cache_control``): ``no-cache`` skips the lookup
(a ``miss`` with reason ``no_cache``; the answer is still stored); ``s-maxage``
turns a hit on an older entry into a miss (reason ``older_than_s_maxage``).

A failure of the embedder or the backend, or one slower than ``cache.timeout_s``,
is a ``cache.error`` and the request goes on to the model: a cache that fails never
fails the request.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio
import msgspec
from opentelemetry.trace import Span, Tracer

from stagecache._model import CacheOutcome, Turn
from stagecache._validate import CheckNumbers, Seconds
from stagecache.cache import KeyParts, Lookup, Scope, SemanticCache
from stagecache.errors import ConfigError
from stagecache.exporters._stdlog import get_logger
from stagecache.pipeline._events import CacheHit, CacheMiss, EventBus
from stagecache.pipeline._runner import CLEANUPS
from stagecache.stages._cacheops import CacheOps, Skip
from stagecache.stages._keys import ensure_embedding, key_parts
from stagecache.types import Embedder, FailurePolicy

__all__ = ["CacheCheck", "CacheCheckConfig"]

_log = get_logger("stagecache.cache")

#: Entry metadata -> the hit span's attribute of the tokens it saved.
_SAVED = (
    ("prompt_tokens", "stagecache.saved.input_tokens"),
    ("completion_tokens", "stagecache.saved.output_tokens"),
)

#: How much earlier than the stage the runner's timeout may have started.
_DEADLINE_SLACK_S = 0.05

#: Keys in ``turn.scratch`` the store and write-invalidate stages read.
SCOPE, PARTS = "cache_scope", "cache_parts"


class CacheCheckConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``cache_check`` stage.

    Attributes:
        single_flight: identical concurrent misses wait for the first one's answer
            instead of each calling the model; if the first one's model call
            fails, one follower takes over and the others wait for it.
        flight_wait_s: the longest a follower waits for the leader (takeovers
            included).
        timeout_s: the stage's own limit, embedding included (the backend calls
            are also bounded by ``[cache] timeout_s``): a hung embedder becomes a
            ``cache.error`` after this long, and the model answers.
    """

    single_flight: bool = True
    flight_wait_s: Seconds = 60.0
    timeout_s: Seconds | None = 2.0


class _Ctx(Protocol):
    cache: SemanticCache | None
    embedder: Embedder | None
    events: EventBus
    tracer: Tracer
    extras: dict[str, Any]


class CacheCheck:
    """Looks the query up in the caller's scope."""

    __slots__ = ("_config", "_ops", "timeout_s")
    Config = CacheCheckConfig
    name = "cache_check"
    failure_policy: FailurePolicy = "continue"

    def __init__(self, ops: CacheOps, config: CacheCheckConfig | None = None) -> None:
        self._ops = ops
        self._config = config or CacheCheckConfig()
        self.timeout_s = self._config.timeout_s

    @classmethod
    def from_config(cls, config: CacheCheckConfig, ctx: _Ctx) -> CacheCheck:
        if ctx.cache is None or ctx.embedder is None:
            raise ConfigError(
                "the cache_check stage needs a cache and an embedder", field="stages"
            )
        return cls(CacheOps.of(ctx), config)

    async def __call__(self, turn: Turn) -> Turn:
        started = anyio.current_time()
        ops = self._ops
        settings = ops.cache.settings
        turn.cache.threshold = ops.cache.threshold
        # Pessimistic until an outcome is recorded: if the stage is cut off by its
        # timeout (a hung embedder), the turn reports a cache error, not "off".
        _mark_unfinished(turn)
        turn.scratch["scope_mode"] = settings.scope
        prepared = self._prepare(turn)
        if isinstance(prepared, Skip):
            ops.skip(turn, prepared.reason)
            return turn
        scope, parts = prepared
        control = turn.cache_control
        if control is not None and control.no_cache:
            # Asked for a fresh answer: no lookup, but the answer is stored (so
            # the query's vector is still needed).
            with ops.tracer.start_as_current_span("cache.bypass") as span:
                ops.scope_attributes(span, scope, turn)
                try:
                    await ensure_embedding(turn, ops.embedder)
                except Exception as exc:
                    ops.error(turn, span, "lookup", exc)
                    return turn
            turn.cache.status, turn.cache.reason = "miss", "no_cache"
            turn.scratch[SCOPE], turn.scratch[PARTS] = scope, parts
            return turn
        with ops.tracer.start_as_current_span("cache.lookup") as span:
            ops.scope_attributes(span, scope, turn)
            try:
                await self._lookup(turn, scope, parts, span)
            except anyio.get_cancelled_exc_class():
                ops.cut_off(span, "lookup", timed_out=self._timed_out(started))
                raise
            except Exception as exc:
                ops.error(turn, span, "lookup", exc)
                return turn
        if turn.cache.status == "miss":
            turn.scratch[SCOPE], turn.scratch[PARTS] = scope, parts
            # A no-store leader would make its followers wait for nothing.
            if self._config.single_flight and not (control and control.no_store):
                await self._follow_or_lead(turn, scope, parts, started)
        return turn

    def _prepare(self, turn: Turn) -> tuple[Scope, KeyParts] | Skip:
        ops = self._ops
        settings = ops.cache.settings
        scope = ops.cache.scope_for(turn.caller)
        if isinstance(scope, str):
            return Skip(scope)
        if turn.history and not settings.cache_multi_turn:
            return Skip("multi_turn_off")
        if any(e.startswith("memory_search:") for e in turn.errors):
            return Skip("memory_unavailable")
        if not turn.query.strip():
            return Skip("empty_query")
        if turn.uncacheable:
            return Skip(turn.uncacheable)
        control = turn.cache_control
        if control is not None and control.no_cache and control.no_store:
            return Skip("no_cache_no_store")
        parts = key_parts(
            turn, ops.embedder.model_id, multi_turn=settings.cache_multi_turn
        )
        return scope, parts

    async def _lookup(
        self, turn: Turn, scope: Scope, parts: KeyParts, span: Span
    ) -> None:
        ops = self._ops
        vector = await ensure_embedding(turn, ops.embedder)
        # The cache timeout bounds the backend, not the local model: a slow or hung
        # backend must not hold the request, a busy CPU is not a cache failure.
        with anyio.fail_after(ops.cache.settings.timeout_s):
            found = await ops.cache.lookup(scope, vector, parts, turn.query)
        outcome = turn.cache
        outcome.similarity = found.best_similarity
        threshold = ops.cache.threshold
        _report_decision(outcome, span, threshold, found, ops.cache)
        if found.best_similarity is not None:
            span.set_attribute("cache.similarity", found.best_similarity)
        reason = found.reason
        max_age = turn.cache_control.s_maxage if turn.cache_control else None
        if (
            found.hit is not None
            and max_age is not None
            and (found.entry_age_s or 0.0) > max_age
        ):
            reason = "older_than_s_maxage"
        if found.hit is None or reason == "older_than_s_maxage":
            outcome.status, outcome.reason = "miss", reason
            span.update_name("cache.miss")
            span.set_attribute("cache.reason", reason)
            if ops.events.active:
                ops.events.publish(
                    CacheMiss(
                        request_id=turn.request_id,
                        scope=scope.hash,
                        scope_mode=scope.mode,
                        threshold=threshold,
                        similarity=found.best_similarity,
                        reason=reason,
                        model=turn.model,
                    )
                )
            return
        hit = found.hit
        assert hit is not None
        if found.touch_error is not None:
            ops.bookkeeping_failed(turn, "touch", found.touch_error)
        age = found.entry_age_s if found.entry_age_s is not None else 0.0
        outcome.status, outcome.reason = "hit", "hit"
        outcome.similarity, outcome.entry_id, outcome.entry_age_s = (
            hit.similarity,
            hit.entry_id,
            age,
        )
        outcome.metadata = dict(hit.metadata)
        turn.answer, turn.answer_source = hit.answer, "cache"
        span.update_name("cache.hit")
        span.set_attribute("cache.similarity", hit.similarity)
        span.set_attribute("cache.entry_id", hit.entry_id)
        span.set_attribute("cache.entry_age_s", age)
        # What the hit saved: the stored answer's model usage.
        for key, attribute in _SAVED:
            tokens = _int(hit.metadata.get(key))
            if tokens is not None:
                span.set_attribute(attribute, tokens)
        if ops.events.active:
            ops.events.publish(
                CacheHit(
                    request_id=turn.request_id,
                    scope=scope.hash,
                    scope_mode=scope.mode,
                    similarity=hit.similarity,
                    threshold=threshold,
                    entry_id=hit.entry_id,
                    entry_age_s=age,
                    model=turn.model,
                    query_chars=len(turn.query),
                    answer_chars=len(hit.answer),
                    prompt_tokens=_int(hit.metadata.get("prompt_tokens")),
                    completion_tokens=_int(hit.metadata.get("completion_tokens")),
                )
            )

    def _timed_out(self, started: float) -> bool:
        """Whether a cancellation now is the stage's own timeout (not the caller's)."""
        if self.timeout_s is None:
            return False
        # The runner's deadline starts a moment before the stage does.
        return anyio.current_time() - started >= self.timeout_s - _DEADLINE_SLACK_S

    async def _follow_or_lead(
        self, turn: Turn, scope: Scope, parts: KeyParts, started: float
    ) -> None:
        flight = await self._ops.cache.single_flight(
            scope, turn.query, parts, wait_s=self._config.flight_wait_s
        )
        if flight.leader:
            # Released when the turn ends, whatever happens: stored, failed,
            # cancelled. Without an answer it failed: one follower takes over.
            turn.scratch.setdefault(CLEANUPS, []).append(
                lambda: flight.release(failed=turn.answer is None)
            )
            if flight.took_over:
                turn.scratch["single_flight"] = "took_over"
                _log.debug("single-flight follower took over from a failed leader")
            return
        turn.scratch["single_flight"] = "follower"
        with self._ops.tracer.start_as_current_span("cache.lookup") as span:
            self._ops.scope_attributes(span, scope, turn)
            span.set_attribute("stagecache.single_flight", "follower")
            try:
                await self._lookup(turn, scope, parts, span)
            except anyio.get_cancelled_exc_class():
                self._ops.cut_off(span, "lookup", timed_out=self._timed_out(started))
                raise
            except Exception as exc:
                self._ops.error(turn, span, "lookup", exc)
        _log.debug("single-flight follower looked up again", status=turn.cache.status)


def _int(value: str | None) -> int | None:
    """A token count stored in entry metadata, or None when absent or malformed."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _report_decision(
    outcome: CacheOutcome,
    span: Span,
    threshold: float,
    found: Lookup,
    cache: SemanticCache,
) -> None:
    """The effective decision on the outcome and the span: the floor in force,
    the floor of the rule that decided, the verifier's score and rule."""
    verdict = found.verdict
    outcome.threshold = threshold
    outcome.floor = cache.decision_floor(verdict)
    span.set_attribute("cache.threshold", threshold)
    span.set_attribute("cache.floor", outcome.floor)
    if verdict is None:
        outcome.score = outcome.rule = None
        return
    outcome.score, outcome.rule = verdict.score, verdict.reason
    span.set_attribute("cache.score", verdict.score)
    span.set_attribute("cache.rule", verdict.reason)


def _mark_unfinished(turn: Turn) -> None:
    turn.cache.status, turn.cache.reason = "error", "stage_failed"
