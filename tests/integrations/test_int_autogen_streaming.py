"""AutoGen: ``create_stream`` on a miss streams live from the inner client.

Order, not timing: the inner client holds its last chunk back until the caller
has seen the first one (a wrapper that buffers would keep the caller waiting
until the inner client gives up).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anyio
import pytest
from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, RequestUsage, UserMessage
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.replay import ReplayChatCompletionClient

import stagecache
from stagecache.guards import PiiRedactor, Redaction
from stagecache.integrations.autogen import StagecacheChatCompletionClient
from stagecache.stages.output_guard import OutputGuard

pytestmark = pytest.mark.anyio

MODEL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}
GATE_WAIT_S = 5.0


class GatedStream(ReplayChatCompletionClient):
    """Streams scripted pieces; the last waits for ``gate`` when there is one."""

    def __init__(self, pieces: list[str], finish: str = "stop") -> None:
        text = "".join(pieces)
        usage = RequestUsage(prompt_tokens=10, completion_tokens=5)
        super().__init__(
            [
                CreateResult(
                    finish_reason=finish, content=text, usage=usage, cached=False
                )
            ]
            * 4,  # enough for every buffered create a test may make
            model_info=MODEL_INFO,
        )
        self.pieces = pieces
        self.finish = finish
        self.gate: anyio.Event | None = None
        self.gate_timed_out = False
        self.streams = 0

    async def create_stream(  # type: ignore[override]
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Any = "auto",
        json_output: Any = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        self.streams += 1
        for i, piece in enumerate(self.pieces):
            if i == len(self.pieces) - 1 and self.gate is not None:
                with anyio.move_on_after(GATE_WAIT_S) as scope:
                    await self.gate.wait()
                self.gate_timed_out = scope.cancelled_caught
            yield piece
        usage = RequestUsage(prompt_tokens=10, completion_tokens=5)
        yield CreateResult(
            finish_reason=self.finish,  # type: ignore[arg-type]
            content="".join(self.pieces),
            usage=usage,
            cached=False,
        )

    async def create(self, *args: Any, **kwargs: Any) -> CreateResult:
        if self.gate is not None:  # a buffered answer waits for the gate too
            with anyio.move_on_after(GATE_WAIT_S) as scope:
                await self.gate.wait()
            self.gate_timed_out = scope.cancelled_caught
        return await super().create(*args, **kwargs)


def _client(
    inner: GatedStream, options: dict[str, Any]
) -> StagecacheChatCompletionClient:
    return StagecacheChatCompletionClient.default(
        inner, caller=stagecache.Caller(user_id="alice"), model="gated", **options
    )


def _ask(text: str) -> list[LLMMessage]:
    return [UserMessage(content=text, source="user")]


async def test_a_miss_streams_before_the_inner_client_finishes(
    pipeline_options: dict[str, Any],
) -> None:
    inner = GatedStream([" Paris", " is the", " capital", " of France."])
    inner.gate = anyio.Event()
    client = _client(inner, pipeline_options)
    async with client.pipeline:
        items: list[str | CreateResult] = []
        async for item in client.create_stream(_ask("What is the capital of France?")):
            items.append(item)
            if isinstance(item, str) and item.strip():
                inner.gate.set()  # the first text: let the inner client finish
        inner.gate.set()
        assert not inner.gate_timed_out, "no chunk came before the inner client ended"
        final = items[-1]
        assert isinstance(final, CreateResult) and not final.cached
        assert final.finish_reason == "stop"
        chunks = [i for i in items[:-1] if isinstance(i, str)]
        assert "".join(chunks) == final.content == " Paris is the capital of France."
        # Stored at the end: the next ask is a hit, replayed in chunks.
        inner.gate = None
        again = [
            i
            async for i in client.create_stream(_ask("What is the capital of France?"))
        ]
    last = again[-1]
    assert isinstance(last, CreateResult) and last.cached
    assert inner.streams == 1


async def test_pii_split_across_chunks_is_redacted_live(
    pipeline_options: dict[str, Any],
) -> None:
    pieces = ["Write to bob.sm", "ith@exam", "ple.com or pay 4111 11", "11 1111 1111."]
    inner = GatedStream(pieces)
    client = _client(inner, pipeline_options)
    async with client.pipeline:
        items = [i async for i in client.create_stream(_ask("Who gets the bill?"))]
        chunks = [i for i in items if isinstance(i, str)]
        for chunk in chunks:
            assert "bob" not in chunk and "4111" not in chunk and "ith@" not in chunk
        text = "".join(chunks)
        assert text == "Write to [REDACTED:EMAIL] or pay [REDACTED:CARD]."
        final = items[-1]
        assert isinstance(final, CreateResult) and final.content == text
        # A redacted answer is not stored.
        again = [i async for i in client.create_stream(_ask("Who gets the bill?"))]
    assert isinstance(again[-1], CreateResult) and not again[-1].cached
    assert inner.streams == 2


async def test_a_truncated_stream_is_not_stored(
    pipeline_options: dict[str, Any],
) -> None:
    inner = GatedStream([" Once", " upon", " a"], finish="length")
    client = _client(inner, pipeline_options)
    async with client.pipeline:
        items = [i async for i in client.create_stream(_ask("Tell me a long story."))]
        assert isinstance(items[-1], CreateResult)
        assert items[-1].finish_reason == "length"
        again = [i async for i in client.create_stream(_ask("Tell me a long story."))]
    assert isinstance(again[-1], CreateResult) and not again[-1].cached
    assert inner.streams == 2


class _FailingRedactor(PiiRedactor):
    """An injected fault: the detectors crash on a text with ``BOOM``."""

    def redact(self, text: str) -> Redaction:
        if "BOOM" in text:
            raise RuntimeError("detector crashed")
        return super().redact(text)


async def test_a_guard_failure_mid_stream_ends_refused_and_unstored(
    pipeline_options: dict[str, Any],
) -> None:
    inner = GatedStream([" Fine", " start.", " then BOOM", " secret tail"])
    client = _client(inner, pipeline_options)
    guard = next(s for s in client.pipeline.stages if isinstance(s, OutputGuard))
    original = guard._redactor
    guard._redactor = _FailingRedactor()
    try:
        async with client.pipeline:
            items = [i async for i in client.create_stream(_ask("Say it loud."))]
            again = [i async for i in client.create_stream(_ask("Say it loud."))]
    finally:
        guard._redactor = original
    text = "".join(i for i in items if isinstance(i, str))
    assert "BOOM" not in text and "secret" not in text
    final = items[-1]
    assert isinstance(final, CreateResult) and final.finish_reason == "content_filter"
    assert isinstance(again[-1], CreateResult) and not again[-1].cached
    assert inner.streams == 2
