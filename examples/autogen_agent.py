"""An AutoGen AssistantAgent whose model calls go through stagecache (offline).

    pip install 'stagecache[autogen]'
    HF_HUB_OFFLINE=1 python examples/autogen_agent.py

The inner model is AutoGen's ReplayChatCompletionClient (scripted answers), so no
API key is needed; swap in OpenAIChatCompletionClient for a real model.
"""

from __future__ import annotations

import asyncio

from autogen_agentchat.agents import AssistantAgent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

import stagecache
from stagecache.config import parse_config
from stagecache.integrations.autogen import StagecacheChatCompletionClient

USAGE = RequestUsage(prompt_tokens=12, completion_tokens=6)


def say(text: str) -> CreateResult:
    return CreateResult(finish_reason="stop", content=text, usage=USAGE, cached=False)


async def reset_password(item: str) -> str:
    """Reset a credential (a writing tool: calling it evicts the user's cache)."""
    return f"{item} reset"


async def main() -> None:
    inner = ReplayChatCompletionClient(
        [
            say("Open Settings > Security and choose 'Reset password'."),
            CreateResult(
                finish_reason="function_calls",
                content=[FunctionCall(id="1", name="reset_password", arguments="{}")],
                usage=USAGE,
                cached=False,
            ),
            say("Done: your password was reset."),
            say("Open Settings > Security (fresh answer after the write)."),
        ],
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": False,
            "family": "unknown",
            "structured_output": False,
        },
    )
    client = StagecacheChatCompletionClient.default(
        inner,
        caller=stagecache.Caller(user_id="alice"),
        model="replay",
        # The structural verifier accepts close paraphrases; the default learned
        # one is tuned for a 1% wrong-hit rate and is stricter.
        config=parse_config({"verifier": {"kind": "structural"}}),
    )
    questions = [
        "How do I reset my password?",
        "How can I reset my password?",  # a paraphrase: answered from the cache
    ]
    async with client.pipeline:
        for question in questions:
            result = await AssistantAgent("assistant", model_client=client).run(
                task=question
            )
            outcome = client.last_result.cache.status if client.last_result else "-"
            print(f"{outcome:<5} {question} -> {result.messages[-1].to_text()}")
        agent = AssistantAgent(
            "assistant",
            model_client=client,
            tools=[reset_password],
            reflect_on_tool_use=True,
        )
        result = await agent.run(task="Please reset my password now.")
        print(f"tool  -> {result.messages[-1].to_text()}")
        print("entries after the writing tool:", client.pipeline.cache.stats())
        result = await AssistantAgent("assistant", model_client=client).run(
            task=questions[1]
        )
        print(f"after {questions[1]} -> {result.messages[-1].to_text()}")
    print("model tokens actually spent:", client.actual_usage())


if __name__ == "__main__":
    asyncio.run(main())
