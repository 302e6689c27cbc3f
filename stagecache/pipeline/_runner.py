"""The pipeline runner: a short loop over a tuple of stages built once.

Every request is a root span ``stagecache.request``; every stage a child span
``stagecache.stage.<name>`` (all stages are siblings: the chain is flat, not an onion).
A stage's failure is contained by its ``failure_policy``:

- ``continue``: the error is recorded on the turn, its span and the event bus, and the
  next stage runs (cache and memory stages: a cache that fails never fails a request);
- ``refuse``: the turn ends with a refusal (guards fail closed);
- ``fail``: :class:`~stagecache.errors.StageError` reaches the caller (the model call,
  which has no substitute).

A stage that runs past its ``timeout_s`` is cancelled and treated as a failure of
type :class:`~stagecache.errors.StageTimeout`. Cancellation of the whole request
propagates; stages that write (the cache store) shield their critical sections so
no half-written state is left behind. Cleanups registered on a turn (single-flight
releases) run whatever happens.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import msgspec.inspect as mi
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from stagecache._cachecontrol import CacheControl, coerce_cache_control
from stagecache._model import (
    Caller,
    Message,
    Result,
    ToolSpec,
    Turn,
    coerce_messages,
)
from stagecache._request_params import request_params
from stagecache._validate import MAX_SECONDS, number_problem
from stagecache.errors import ConfigError, InputError, StageError, StageTimeout
from stagecache.exporters._errors import (
    ErrorPolicy,
    error_policy,
    record_error,
    safe_error_message,
)
from stagecache.exporters._privacy import query_attributes
from stagecache.exporters._stdlog import get_logger
from stagecache.pipeline._events import (
    EventBus,
    RequestFinished,
    RequestStarted,
    StageFailed,
    StageFinished,
)
from stagecache.pipeline._tracing import current_trace_ids
from stagecache.types import Stage

__all__ = ["CLEANUPS", "Runner"]

_log = get_logger("stagecache.pipeline")

#: Key in ``turn.scratch`` of a list of callables run when the turn ends.
CLEANUPS = "_cleanups"

_DEFAULT_REFUSAL = "Sorry, this request could not be processed safely."


class Runner:
    """Runs turns through a fixed tuple of stages."""

    __slots__ = (
        "_events",
        "_record_errors",
        "_record_query",
        "_refusal",
        "_stages",
        "_tracer",
        "default_model",
    )

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        tracer: Tracer,
        events: EventBus,
        default_model: str = "default",
        refusal: str = _DEFAULT_REFUSAL,
        record_query_text: bool = False,
        record_error_messages: bool = False,
    ) -> None:
        names = [s.name for s in stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"stage names must be unique, repeated: {', '.join(dupes)}"
            )
        for stage in stages:
            _check_timeout(stage)
        self._stages: tuple[Stage, ...] = tuple(stages)
        self._tracer = tracer
        self._events = events
        self._refusal = refusal
        self._record_query = record_query_text
        self._record_errors = record_error_messages
        self.default_model = default_model

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The chain, in order."""
        return self._stages

    def make_turn(
        self,
        messages: str | list[Message] | list[dict[str, Any]],
        *,
        caller: Caller | None,
        model: str | None,
        instructions: str | None,
        tools: Sequence[ToolSpec | dict[str, Any]] | None,
        params: Mapping[str, Any] | None = None,
        cache: CacheControl | Mapping[str, Any] | None = None,
    ) -> Turn:
        """Validate the inputs of ``run`` and build a turn."""
        msgs = coerce_messages(messages)
        system = [m.content for m in msgs if m.role == "system"]
        if instructions is None:
            instructions = "\n".join(system)
        if caller is not None and not isinstance(caller, Caller):
            raise InputError(
                f"caller: expected stagecache.Caller, got {type(caller).__name__}"
            )
        specs = [_coerce_tool(t, i) for i, t in enumerate(tools or ())]
        request = request_params(params, specs)
        return Turn(
            caller=caller or Caller(),
            messages=msgs,
            model=model or self.default_model,
            instructions=instructions,
            tools=specs,
            params={
                k: v
                for k, v in (params or {}).items()
                if v is not None and k != "cache"
            },
            params_fingerprint=request.fingerprint,
            uncacheable=request.uncacheable,
            cache_control=coerce_cache_control(cache),
        )

    async def run(self, turn: Turn) -> Result:
        """Run ``turn`` through every stage and build the result."""
        policy = ErrorPolicy()
        if self._record_errors:
            texts = (turn.instructions, *(m.content for m in turn.messages))
            policy = ErrorPolicy(record_messages=True, texts=texts)
        with error_policy(policy):
            return await self._run(turn)

    async def _run(self, turn: Turn) -> Result:
        started = time.perf_counter()
        events = self._events
        with self._tracer.start_as_current_span("stagecache.request") as root:
            root.set_attribute("stagecache.request_id", turn.request_id)
            root.set_attribute("stagecache.model", turn.model)
            if root.is_recording():
                root.set_attributes(
                    query_attributes(turn.query, include_text=self._record_query)
                )
            if events.active:
                events.publish(
                    RequestStarted(request_id=turn.request_id, model=turn.model)
                )
            trace_id, _ = current_trace_ids(root)
            try:
                for stage in self._stages:
                    if turn.stopped is not None:
                        break
                    turn = await self._run_stage(stage, turn)
            finally:
                _run_cleanups(turn)
            outcome = _outcome(turn)
            latency = time.perf_counter() - started
            root.set_attribute("stagecache.outcome", outcome)
            root.set_attribute("cache.status", turn.cache.status)
            if events.active:
                events.publish(
                    RequestFinished(
                        request_id=turn.request_id,
                        outcome=outcome,
                        latency_s=latency,
                        model=turn.model,
                        scope_mode=str(turn.scratch.get("scope_mode", "")),
                    )
                )
        return Result(
            answer=turn.answer or "",
            cache=turn.cache,
            blocked=turn.stopped,
            request_id=turn.request_id,
            trace_id=trace_id,
            latency_s=latency,
            usage=turn.usage,
            tool_calls=turn.tool_calls,
            findings=turn.findings,
            errors=turn.errors,
        )

    async def _run_stage(self, stage: Stage, turn: Turn) -> Turn:
        with self._tracer.start_as_current_span(
            f"stagecache.stage.{stage.name}"
        ) as span:
            span.set_attribute("stagecache.stage", stage.name)
            t0 = time.perf_counter()
            try:
                timeout = stage.timeout_s
                if timeout is None:
                    out = await stage(turn)
                else:
                    try:
                        with anyio.fail_after(timeout):
                            out = await stage(turn)
                    except TimeoutError as exc:
                        raise StageTimeout(stage.name, timeout) from exc
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                return self._contain(stage, turn, exc, span, time.perf_counter() - t0)
            if out is not turn and not isinstance(out, Turn):
                exc = TypeError(f"returned {type(out).__name__}, expected the Turn")
                return self._contain(stage, turn, exc, span, time.perf_counter() - t0)
            if self._events.active:
                self._events.publish(
                    StageFinished(
                        request_id=turn.request_id,
                        stage=stage.name,
                        duration_s=time.perf_counter() - t0,
                    )
                )
            return out

    def _contain(
        self, stage: Stage, turn: Turn, exc: Exception, span: Span, duration: float
    ) -> Turn:
        policy = stage.failure_policy
        record_error(span, exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.set_attribute("error.type", type(exc).__name__)
        if self._events.active:
            self._events.publish(
                StageFailed(
                    request_id=turn.request_id,
                    stage=stage.name,
                    error_type=type(exc).__name__,
                    policy=policy,
                    duration_s=duration,
                    message=safe_error_message(exc),
                )
            )
        # A broken log sink (a closed pipe) must not fail the turn.
        with contextlib.suppress(Exception):
            _log.warning(
                "stage failed",
                stage=stage.name,
                policy=policy,
                error_type=type(exc).__name__,
                error=safe_error_message(exc),
            )
        turn.errors.append(f"{stage.name}: {type(exc).__name__}: {exc}")
        if policy == "continue":
            return turn
        if policy == "refuse":
            return turn.stop(stage.name, "stage_failed", self._refusal)
        if isinstance(exc, StageError):
            raise exc
        raise StageError(stage.name, f"{type(exc).__name__}: {exc}") from exc


def _coerce_tool(tool: ToolSpec | dict[str, Any], index: int) -> ToolSpec:
    if isinstance(tool, ToolSpec):
        return tool
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InputError(
            f"tools[{index}]: expected a ToolSpec or a dict with a string 'name', "
            f"got {tool!r:.80}"
        )
    try:
        import msgspec

        return msgspec.convert(tool, ToolSpec)
    except msgspec.ValidationError as exc:
        raise InputError(f"tools[{index}]: {exc}") from None


def _outcome(turn: Turn) -> str:
    if turn.stopped is not None:
        return "blocked"
    if turn.answer is None:
        return "error"
    return turn.cache.status


def _run_cleanups(turn: Turn) -> None:
    cleanups: list[Callable[[], None]] = turn.scratch.pop(CLEANUPS, [])
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except Exception as exc:  # a cleanup must not mask the request's own outcome
            _log.warning("turn cleanup failed", error=safe_error_message(exc))


_SECONDS = mi.FloatType(gt=0.0, le=MAX_SECONDS)  # the range of ``Seconds``


def _check_timeout(stage: Stage) -> None:
    """A stage built in Python gets the range its config would have enforced."""
    timeout = getattr(stage, "timeout_s", None)
    if timeout is None:
        return
    problem = number_problem(timeout, _SECONDS)
    if problem is not None:
        raise ConfigError(problem, field=f"stage {stage.name!r}.timeout_s")
