"""AutoGen: an AssistantAgent on the wrapped client, with a scripted inner model."""

from __future__ import annotations

from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

import stagecache
from stagecache.integrations.autogen import StagecacheChatCompletionClient

pytestmark = pytest.mark.anyio

MODEL_INFO: Any = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}
ALICE = stagecache.Caller(user_id="alice")


def _calls_made(inner: ReplayChatCompletionClient) -> int:
    return int(inner._current_index)  # the replay client's own call counter


def _usage() -> RequestUsage:
    return RequestUsage(prompt_tokens=10, completion_tokens=5)


def _text(text: str) -> CreateResult:
    return CreateResult(
        finish_reason="stop", content=text, usage=_usage(), cached=False
    )


def _calls(name: str) -> CreateResult:
    call = FunctionCall(id="call-1", name=name, arguments='{"item": "password"}')
    return CreateResult(
        finish_reason="function_calls", content=[call], usage=_usage(), cached=False
    )


def _client(
    inner: ReplayChatCompletionClient, options: dict[str, Any], **kw: Any
) -> StagecacheChatCompletionClient:
    return StagecacheChatCompletionClient.default(
        inner, caller=ALICE, model="replay", **options, **kw
    )


async def reset_password(item: str) -> str:
    """Reset a credential (writes)."""
    return f"{item} reset"


async def test_agent_answers_a_paraphrase_from_the_cache(
    pipeline_options: dict[str, Any],
) -> None:
    inner = ReplayChatCompletionClient(
        [_text("Open Settings > Security."), _text("a second, unexpected call")],
        model_info=MODEL_INFO,
    )
    client = _client(inner, pipeline_options)
    async with client.pipeline:
        first = AssistantAgent("assistant", model_client=client)
        r1 = await first.run(task="How do I reset my password?")
        second = AssistantAgent("assistant", model_client=client)
        r2 = await second.run(task="How can I reset my password?")
    assert r1.messages[-1].to_text() == "Open Settings > Security."
    assert r2.messages[-1].to_text() == "Open Settings > Security."
    assert _calls_made(inner) == 1
    assert client.last_result is not None and client.last_result.cache.hit
    assert client.actual_usage().completion_tokens == 5


async def test_writing_tool_call_passes_through_and_evicts_the_scope(
    pipeline_options: dict[str, Any],
) -> None:
    inner = ReplayChatCompletionClient(
        [
            _text("Open Settings > Security."),
            _calls("reset_password"),
            _text("Done: your password was reset."),
            _text("Open Settings > Security, again."),
        ],
        model_info=MODEL_INFO,
    )
    client = _client(inner, pipeline_options)
    async with client.pipeline:
        await AssistantAgent("a", model_client=client).run(
            task="How do I reset my password?"
        )
        assert client.pipeline.cache.stats()["entries"] == 1
        agent = AssistantAgent(
            "a",
            model_client=client,
            tools=[reset_password],
            reflect_on_tool_use=True,
        )
        result = await agent.run(task="Please reset my password now.")
        assert result.messages[-1].to_text() == "Done: your password was reset."
        assert client.pipeline.cache.stats()["entries"] == 0
        again = await AssistantAgent("a", model_client=client).run(
            task="How can I reset my password?"
        )
    assert again.messages[-1].to_text() == "Open Settings > Security, again."
    assert _calls_made(inner) == len(inner.chat_completions)


async def test_function_call_response_is_returned_unchanged(
    pipeline_options: dict[str, Any],
) -> None:
    inner = ReplayChatCompletionClient(
        [_calls("lookup"), _calls("lookup")], model_info=MODEL_INFO
    )
    client = _client(inner, pipeline_options, read_only_tools=["lookup"])
    messages = [UserMessage(content="Look up my password policy.", source="user")]
    async with client.pipeline:
        first = await client.create(messages, cancellation_token=CancellationToken())
        second = await client.create(messages)
    assert isinstance(first.content, list) and first.content[0].name == "lookup"
    assert isinstance(second.content, list) and not second.cached
    assert _calls_made(inner) == len(inner.chat_completions)


async def test_stream_replays_a_cached_answer_as_chunks(
    pipeline_options: dict[str, Any],
) -> None:
    inner = ReplayChatCompletionClient(
        [_text("Paris is the capital of France.")], model_info=MODEL_INFO
    )
    client = _client(inner, pipeline_options)
    async with client.pipeline:
        await client.create(
            [UserMessage(content="What is the capital of France?", source="u")]
        )
        items = [
            item
            async for item in client.create_stream(
                [UserMessage(content="What's the capital city of France?", source="u")]
            )
        ]
    final = items[-1]
    assert isinstance(final, CreateResult) and final.cached
    chunks = [i for i in items[:-1] if isinstance(i, str)]
    assert len(chunks) > 1 and "".join(chunks) == final.content
