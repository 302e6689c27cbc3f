"""Test doubles that ship with stagecache, injected through constructors.

- :class:`ScriptedLLM`: a model client whose answer is a function of the prompt.
- :func:`capture_spans`: a tracer provider with an in-memory exporter.
- :class:`EventCapture` / :func:`capture_events`: every event a pipeline publishes.
- :class:`SharedEmbedder`: one loaded model shared by many pipelines (tests, demos),
  with a switch to make it fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

from stagecache._model import ToolCall, Turn, Usage
from stagecache.pipeline._events import Event, EventBus
from stagecache.stages.llm import Completion
from stagecache.types import Embedder, Vectors

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

__all__ = [
    "EventCapture",
    "ScriptedLLM",
    "SpanCapture",
    "capture_events",
    "capture_spans",
]


class ScriptedLLM:
    """A model client that answers ``fn(last user message)`` after ``delay_s``.

    Args:
        fn: maps the text of the last user message to the answer.
        delay_s: how long each call takes (a realistic model takes 0.3-3 s).
        model_id: the model id it reports.
        tool_calls: optional function of the prompt returning the tool calls the
            "model" makes (to exercise write-invalidation).
        tokens_per_char: crude token estimate for usage (default 1 token per 4 chars).
        finish_reason: the finish reason it reports (``"stop"``, ``"length"``,
            ``"content_filter"``, ...), or a function of the prompt returning it;
            None reports none (a client that does not know).

    Attributes:
        calls: how many times the model was called.
        prompts: the prompts it received, in order.
    """

    def __init__(
        self,
        fn: Callable[[str], str],
        *,
        delay_s: float = 0.0,
        model_id: str = "scripted",
        tool_calls: Callable[[str], Sequence[ToolCall]] | None = None,
        tokens_per_char: float = 0.25,
        finish_reason: str | Callable[[str], str | None] | None = "stop",
    ) -> None:
        self._fn = fn
        self._finish = finish_reason
        self._delay_s = delay_s
        self._tool_calls = tool_calls
        self._tpc = tokens_per_char
        self.model_id = model_id
        self.calls = 0
        self.prompts: list[str] = []

    async def complete(self, turn: Turn) -> Completion:
        """Answer ``turn`` (its last user message) after the scripted delay."""
        self.calls += 1
        prompt = turn.query
        self.prompts.append(prompt)
        if self._delay_s:
            await anyio.sleep(self._delay_s)
        text = self._fn(prompt)
        calls = [
            ToolCall(
                name=c.name,
                arguments=dict(c.arguments),
                read_only_hint=c.read_only_hint,
            )
            for c in (self._tool_calls(prompt) if self._tool_calls else ())
        ]
        prompt_chars = sum(len(m.content) for m in turn.messages) + len(
            turn.instructions
        )
        usage = Usage(
            prompt_tokens=max(1, int(prompt_chars * self._tpc)),
            completion_tokens=max(1, int(len(text) * self._tpc)),
        )
        finish = self._finish(prompt) if callable(self._finish) else self._finish
        return Completion(
            text=text,
            usage=usage,
            tool_calls=calls,
            model=self.model_id,
            finish_reason=finish,
        )


class SpanCapture:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(
        self, provider: TracerProvider, exporter: InMemorySpanExporter
    ) -> None:
        self.provider = provider
        self.exporter = exporter

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        """Finished spans, in the order they ended."""
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        """Finished spans called ``name``."""
        return [s for s in self.spans if s.name == name]

    def clear(self) -> None:
        """Forget the spans captured so far."""
        self.exporter.clear()


def capture_spans() -> SpanCapture:
    """A fresh ``TracerProvider`` exporting synchronously to memory.

    Pass ``capture.provider`` as ``tracer_provider=`` to a pipeline.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return SpanCapture(provider, exporter)


class EventCapture:
    """A subscriber that keeps every event it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Event]:
        """The captured events of type ``kind``."""
        return [e for e in self.events if isinstance(e, kind)]

    def tags(self) -> list[str]:
        """The ``event`` tags, in order (``"cache.hit"``, ``"stage.failed"``, ...)."""
        return [type(e).__struct_config__.tag for e in self.events]  # type: ignore[misc]


@contextmanager
def capture_events(bus: EventBus) -> Iterator[EventCapture]:
    """Subscribe an :class:`EventCapture` to ``bus`` for the ``with`` block."""
    capture = EventCapture()
    unsubscribe = bus.subscribe(capture)
    try:
        yield capture
    finally:
        unsubscribe()


class SharedEmbedder:
    """An embedder view without ``warm_up``/``aclose``: pipelines cannot unload it.

    A pipeline closes its components on exit; wrap a model loaded once (per test
    session, per process) to share it between many pipelines.

    Attributes:
        fail: set to an exception to make every ``embed`` call raise it.
        calls: how many times ``embed`` was called.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.fail: BaseException | None = None
        self.calls = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed with the shared model (or raise ``fail``)."""
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return await self.inner.embed(texts)
