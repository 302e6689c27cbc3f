"""The tool/LLM stage: calls the model client when the cache did not answer.

It does nothing when the turn already has an answer (a cache hit). The client's tool
calls are recorded on the turn with their ``read_only_hint`` taken from the turn's
tool specs; a tool the turn did not declare counts as writing (the safe default:
an unknown side effect evicts the scope rather than leave stale answers behind).
Its failure policy is ``fail``: without a model answer there is nothing to return.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
from opentelemetry.trace import SpanKind, Tracer

from stagecache._model import ToolCall, Turn, Usage
from stagecache._validate import CheckNumbers, Seconds
from stagecache.errors import LLMError
from stagecache.exporters import _genai
from stagecache.pipeline._events import EventBus, LLMCall
from stagecache.types import FailurePolicy, LLMClient

__all__ = ["Completion", "LLMStage", "LLMStageConfig"]


class Completion(msgspec.Struct):
    """What a model client returns for a turn.

    Attributes:
        text: the answer text ("" for a reply that only calls tools).
        usage: token usage.
        tool_calls: the tool calls the model made.
        model: the model id the server reported.
        finish_reason: why the model stopped, as the server said it (``"stop"``,
            ``"length"``, ``"content_filter"``, ``"tool_calls"``, ...); None when
            the client does not know. Only answers that ended normally are stored.
        response_id: the id the server gave the completion (``gen_ai.response.id``
            on the model call's span); None when it gave none.
    """

    text: str
    usage: Usage = msgspec.field(default_factory=Usage)
    tool_calls: list[ToolCall] = []
    model: str = ""
    finish_reason: str | None = None
    response_id: str | None = None


class LLMStageConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``llm`` stage.

    Attributes:
        timeout_s: the longest a model call may take before the request fails.
    """

    timeout_s: Seconds | None = 120.0


class _Ctx(Protocol):
    events: EventBus
    llm: LLMClient | None
    tracer: Tracer


class LLMStage:
    """Calls the model on a miss and records the answer, usage and tool calls.

    The call is a ``CLIENT`` span ``chat {model}`` in OpenTelemetry's GenAI
    conventions (see :mod:`stagecache.exporters._genai`), with the turn's request
    parameters (``temperature``, ...) as ``gen_ai.request.*``. A client may offer
    ``provider_name`` (``gen_ai.provider.name``).
    """

    __slots__ = ("_client", "_events", "_provider", "_tracer", "timeout_s")
    Config = LLMStageConfig
    name = "llm"
    failure_policy: FailurePolicy = "fail"

    def __init__(
        self,
        client: LLMClient,
        config: LLMStageConfig | None = None,
        *,
        events: EventBus | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        from stagecache.pipeline._tracing import make_tracer

        self._client = client
        self._events = events or EventBus()
        self._tracer = tracer or make_tracer(None)
        self._provider = _genai.provider_name(client)
        self.timeout_s = (config or LLMStageConfig()).timeout_s

    @classmethod
    def from_config(cls, config: LLMStageConfig, ctx: _Ctx) -> LLMStage:
        if ctx.llm is None:
            from stagecache.errors import ConfigError

            raise ConfigError(
                "the 'llm' stage needs a model client: pass llm=... to "
                "stagecache.load()/Pipeline.default(), or set an [llm] table",
                field="llm",
            )
        return cls(ctx.llm, config, events=ctx.events, tracer=ctx.tracer)

    async def __call__(self, turn: Turn) -> Turn:
        if turn.answer is not None:
            return turn
        completion = await self._call(turn)
        text = getattr(completion, "text", None)
        if not isinstance(text, str):
            raise LLMError(
                f"model client {type(self._client).__name__} returned "
                f"{type(completion).__name__} without a string 'text'"
            )
        turn.answer = text
        turn.answer_source = "llm"
        turn.usage = getattr(completion, "usage", None) or Usage()
        turn.finish_reason = _finish_text(getattr(completion, "finish_reason", None))
        declared = {t.name: t.read_only_hint for t in turn.tools}
        for call in getattr(completion, "tool_calls", None) or []:
            call.read_only_hint = declared.get(call.name, False) and call.read_only_hint
            turn.tool_calls.append(call)
        return turn

    async def _call(self, turn: Turn) -> Any:
        """The model call, as a GenAI ``chat`` span and an ``LLMCall`` event."""
        model = _genai.request_model(turn.model, self._client)
        params = turn.params if isinstance(turn.params, Mapping) else None
        started = time.perf_counter()
        completion: Any = None
        error = ""
        with self._tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes=_genai.chat_attributes(model, self._provider, params),
        ) as span:
            try:
                completion = await self._client.complete(turn)
                _genai.record_response(span, completion)
            except BaseException as exc:
                error = type(exc).__name__
                _genai.record_failure(span, exc)
                raise
            finally:
                if self._events.active:
                    usage = getattr(completion, "usage", None) or Usage()
                    response_model = getattr(completion, "model", "")
                    self._events.publish(
                        LLMCall(
                            request_id=turn.request_id,
                            model=turn.model,
                            latency_s=time.perf_counter() - started,
                            prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens,
                            ok=not error,
                            provider=self._provider,
                            response_model=(
                                response_model
                                if isinstance(response_model, str)
                                else ""
                            ),
                            error_type=error,
                        )
                    )
        return completion


def _finish_text(value: object) -> str | None:
    """A client's finish reason as text (an enum's value); None for none or ""."""
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value) if value is not None and value != "" else None
