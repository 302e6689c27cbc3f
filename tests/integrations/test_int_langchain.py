"""LangChain: the semantic cache through set_llm_cache, and the Runnable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

import stagecache
from stagecache.config import parse_config
from stagecache.errors import ConfigError
from stagecache.integrations.langchain import (
    StagecacheLangChainCache,
    StagecacheRunnable,
)
from stagecache.pipeline._events import CacheError, Event, StageFailed

ANSWERS = ["Open Settings > Security.", "second answer", "third answer"]


@pytest.fixture(scope="module")
def user() -> dict[str, stagecache.Caller]:
    return {"now": stagecache.Caller(user_id="alice")}


@pytest.fixture(scope="module")
def cache(
    pipeline_options: dict[str, Any], user: dict[str, stagecache.Caller]
) -> Iterator[StagecacheLangChainCache]:
    cache = StagecacheLangChainCache(
        caller_from=lambda: user["now"], **pipeline_options
    )
    set_llm_cache(cache)
    yield cache
    set_llm_cache(None)
    cache.close()


def test_paraphrase_hits_and_another_user_misses(
    cache: StagecacheLangChainCache, user: dict[str, stagecache.Caller]
) -> None:
    model = FakeListChatModel(responses=ANSWERS)
    user["now"] = stagecache.Caller(user_id="alice")
    first = model.invoke("How do I reset my password?")
    second = model.invoke("How can I reset my password?")
    assert first.content == second.content == "Open Settings > Security."
    assert cache.last_result is not None and cache.last_result.cache.hit
    user["now"] = stagecache.Caller(user_id="bob")
    third = model.invoke("How can I reset my password?")
    assert third.content == "second answer"
    assert cache.last_result is not None
    assert not cache.last_result.cache.hit


def test_async_api_hits_what_the_sync_api_stored(
    cache: StagecacheLangChainCache, user: dict[str, stagecache.Caller]
) -> None:
    import asyncio

    user["now"] = stagecache.Caller(user_id="carol")
    model = FakeListChatModel(responses=["Paris.", "never asked"])
    assert model.invoke("What is the capital of France?").content == "Paris."

    async def ask() -> Any:
        return await model.ainvoke("What's the capital city of France?")

    assert asyncio.run(ask()).content == "Paris."


def test_another_model_string_misses(
    cache: StagecacheLangChainCache, user: dict[str, stagecache.Caller]
) -> None:
    user["now"] = stagecache.Caller(user_id="dave")
    first = FakeListChatModel(responses=["from model one"])
    other = FakeListChatModel(responses=["from model two"])
    assert first.invoke("What is the weather in Paris?").content == "from model one"
    assert other.invoke("What is the weather in Paris?").content == "from model two"


def test_no_identity_is_not_cached(
    cache: StagecacheLangChainCache, user: dict[str, stagecache.Caller]
) -> None:
    user["now"] = stagecache.Caller()
    model = FakeListChatModel(responses=["one", "two"])
    assert model.invoke("Tell me a joke about cats.").content == "one"
    assert model.invoke("Tell me a joke about cats.").content == "two"
    assert cache.last_result is not None
    assert cache.last_result.cache.status == "skip"


def test_runnable_runs_the_chain_around_the_chat_model(
    pipeline_options: dict[str, Any],
) -> None:
    model = FakeListChatModel(responses=["Open Settings > Security.", "unexpected"])
    runnable = StagecacheRunnable(
        model, caller=stagecache.Caller(user_id="erin"), **pipeline_options
    )
    try:
        miss = runnable.invoke("How do I reset my password?")
        hit = runnable.invoke("How can I reset my password?")
    finally:
        runnable.close()
    assert miss.content == hit.content == "Open Settings > Security."
    assert miss.response_metadata["stagecache"]["cache"] == "miss"
    assert hit.response_metadata["stagecache"]["cache"] == "hit"


# -- construction -----------------------------------------------------------------


def test_a_cache_without_a_caller_refuses_to_be_built(
    pipeline_options: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError) as info:
        StagecacheLangChainCache(**pipeline_options)
    assert info.value.field == "caller"
    with pytest.raises(ConfigError) as info:
        StagecacheLangChainCache(caller=stagecache.Caller(), **pipeline_options)
    assert info.value.field == "caller.user_id"
    with pytest.raises(ConfigError) as info:
        StagecacheRunnable(FakeListChatModel(responses=["x"]), **pipeline_options)
    assert info.value.field == "caller"


def test_a_shared_cache_needs_no_caller(embedder: Any) -> None:
    config = parse_config(
        {
            "verifier": {"kind": "structural"},
            "cache": {
                "timeout_s": 30.0,
                "scope": "shared",
                "shared_data_acknowledged": True,
            },
        }
    )
    cache = StagecacheLangChainCache(embedder=embedder, config=config)
    try:
        model = FakeListChatModel(responses=["shared answer", "never"], cache=cache)
        assert model.invoke("What are the opening hours?").content == "shared answer"
        assert model.invoke("What are the opening hours?").content == "shared answer"
    finally:
        cache.close()


# -- failures ---------------------------------------------------------------------


class FlakyChat(FakeListChatModel):
    """Fails its first ``failures`` calls (an upstream outage), then answers."""

    failures: int = 1
    calls: int = 0

    def _call(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("upstream unavailable")
        return super()._call(*args, **kwargs)


@pytest.fixture
def own_cache(pipeline_options: dict[str, Any]) -> Iterator[StagecacheLangChainCache]:
    cache = StagecacheLangChainCache(
        caller=stagecache.Caller(user_id="frank"), **pipeline_options
    )
    yield cache
    cache.close()


def test_a_failed_model_call_leaves_nothing_parked(
    own_cache: StagecacheLangChainCache,
) -> None:
    events: list[Event] = []
    own_cache.pipeline.events.subscribe(events.append)
    model = FlakyChat(responses=["It is 42.", "never"], cache=own_cache)
    with pytest.raises(RuntimeError, match="upstream unavailable"):
        model.invoke("What is the answer to everything?")
    assert model.invoke("What is the answer to everything?").content == "It is 42."
    # The second lookup did not wait on the first one's parked turn (today it was a
    # single-flight follower of it, cut off by the stage timeout).
    failed = [e for e in events if isinstance(e, StageFailed | CacheError)]
    assert failed == []
    assert own_cache.pending == 0
    assert model.invoke("What is the answer to everything?").content == "It is 42."
    assert own_cache.last_result is not None and own_cache.last_result.cache.hit
    assert model.calls == 2


# -- what a hit returns -----------------------------------------------------------

USAGE = {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}


def _paris() -> AIMessage:
    return AIMessage(
        content="Paris.",
        usage_metadata=USAGE,  # type: ignore[arg-type]
        response_metadata={"finish_reason": "stop", "model_name": "fake-1"},
    )


def test_cache_hits_keep_usage_and_response_metadata(
    own_cache: StagecacheLangChainCache,
) -> None:
    model = GenericFakeChatModel(
        messages=iter([_paris(), AIMessage(content="never")]), cache=own_cache
    )
    first = model.invoke("What is the capital of France?")
    second = model.invoke("What is the capital of France?")
    assert own_cache.last_result is not None and own_cache.last_result.cache.hit
    assert second.content == "Paris."
    # LangChain's convention for a hit: the usage is kept, its cost zeroed.
    assert second.usage_metadata == {**USAGE, "total_cost": 0}
    assert first.response_metadata["model_name"] == "fake-1"
    assert second.response_metadata["model_name"] == "fake-1"
    assert second.response_metadata["finish_reason"] == "stop"
    assert second.response_metadata["stagecache"]["cache"] == "hit"
    assert second.id != first.id  # a hit is a new message, not a replayed id


def test_several_chat_generations_are_stored_and_returned(
    own_cache: StagecacheLangChainCache,
) -> None:
    prompt = dumps([HumanMessage(content="Name a colour.")])
    generations = [
        ChatGeneration(
            message=AIMessage(content=text, usage_metadata=USAGE),  # type: ignore[arg-type]
            generation_info={"finish_reason": "stop", "index": i},
        )
        for i, text in enumerate(["Red.", "Blue."])
    ]
    own_cache.update(prompt, "n=2", generations)
    found = own_cache.lookup(prompt, "n=2")
    assert found is not None and len(found) == 2
    for got, want in zip(found, generations, strict=True):
        assert isinstance(got, ChatGeneration)
        assert got.text == want.text
        assert got.generation_info == want.generation_info
        assert got.message.usage_metadata == USAGE  # type: ignore[attr-defined]
        assert got.message.response_metadata["stagecache"]["cache"] == "hit"


def test_several_generations_with_one_truncated_are_not_stored(
    own_cache: StagecacheLangChainCache,
) -> None:
    generations = [
        Generation(text="A full answer.", generation_info={"finish_reason": "stop"}),
        Generation(text="A cut", generation_info={"finish_reason": "length"}),
    ]
    own_cache.update("Tell me a story.", "n=2", generations)
    assert own_cache.lookup("Tell me a story.", "n=2") is None


def test_runnable_hits_keep_usage_and_response_metadata(
    pipeline_options: dict[str, Any],
) -> None:
    model = GenericFakeChatModel(messages=iter([_paris(), AIMessage(content="never")]))
    runnable = StagecacheRunnable(
        model, caller=stagecache.Caller(user_id="gina"), **pipeline_options
    )
    try:
        miss = runnable.invoke("What is the capital of France?")
        hit = runnable.invoke("What is the capital of France?")
    finally:
        runnable.close()
    assert hit.response_metadata["stagecache"]["cache"] == "hit"
    assert hit.content == miss.content == "Paris."
    assert hit.usage_metadata == {**USAGE, "total_cost": 0}  # type: ignore[attr-defined]
    assert hit.response_metadata["model_name"] == "fake-1"


# -- tools ------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


class ToolChat(GenericFakeChatModel):
    """A fake chat model that binds tools the way provider models do."""

    seen_tools: list[list[str]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:  # fmt: skip
        names = [t["function"]["name"] for t in kwargs.get("tools", [])]
        self.seen_tools.append(names)
        return super()._generate(messages, stop=stop, run_manager=run_manager)


def test_runnable_bind_tools_keys_on_the_tools_and_never_stores_tool_calls(
    pipeline_options: dict[str, Any],
) -> None:
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}
    model = ToolChat(
        messages=iter(
            [
                AIMessage(content="Paris is sunny today."),
                AIMessage(content="", tool_calls=[call]),
                AIMessage(content="", tool_calls=[{**call, "id": "call_2"}]),
            ]
        ),
        seen_tools=[],
    )
    plain = StagecacheRunnable(
        model, caller=stagecache.Caller(user_id="hana"), **pipeline_options
    )
    try:
        bound = plain.bind_tools([get_weather], read_only_tools=["get_weather"])
        assert isinstance(bound, StagecacheRunnable)
        assert bound.model_id != plain.model_id
        assert plain.invoke("What's the weather in Paris?").content == (
            "Paris is sunny today."
        )
        # The tools are part of the request: the plain answer is not served.
        first = bound.invoke("What's the weather in Paris?")
        assert first.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
        second = bound.invoke("What's the weather in Paris?")
        assert second.tool_calls[0]["id"] == "call_2"  # type: ignore[attr-defined]
        # A read-only tool call did not evict the plain answer.
        again = plain.invoke("What's the weather in Paris?")
        assert again.response_metadata["stagecache"]["cache"] == "hit"
    finally:
        plain.close()
    assert model.seen_tools == [[], ["get_weather"], ["get_weather"]]


def test_concurrent_identical_calls_each_answer_and_leave_nothing_parked(
    own_cache: StagecacheLangChainCache,
) -> None:
    import asyncio

    model = FakeListChatModel(responses=["Seven.", "Seven."], cache=own_cache)

    async def ask_twice() -> list[Any]:
        question = "How many days are in a week?"
        return list(
            await asyncio.gather(model.ainvoke(question), model.ainvoke(question))
        )

    replies = asyncio.run(ask_twice())
    assert [r.content for r in replies] == ["Seven.", "Seven."]
    assert own_cache.pending == 0
    assert model.invoke("How many days are in a week?").content == "Seven."
    assert own_cache.last_result is not None and own_cache.last_result.cache.hit


def test_an_llm_generating_several_prompts_stores_each(
    own_cache: StagecacheLangChainCache,
) -> None:
    # BaseLLM looks every prompt up first, then updates each: one thread, two turns.
    llm = FakeListLLM(responses=["Blue.", "Green.", "never", "never"], cache=own_cache)
    first = llm.generate(["What colour is the sky?", "What colour is grass?"])
    assert [g[0].text for g in first.generations] == ["Blue.", "Green."]
    assert own_cache.pending == 0
    again = llm.generate(["What colour is the sky?", "What colour is grass?"])
    assert [g[0].text for g in again.generations] == ["Blue.", "Green."]


def test_a_call_failed_in_another_thread_does_not_hold_up_this_one(
    own_cache: StagecacheLangChainCache,
) -> None:
    import threading

    events: list[Event] = []
    own_cache.pipeline.events.subscribe(events.append)
    model = FlakyChat(responses=["Blue."], cache=own_cache)
    errors: list[BaseException] = []

    def failing_call() -> None:
        try:
            model.invoke("What colour is the sea?")
        except RuntimeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=failing_call)
    worker.start()
    worker.join()
    assert len(errors) == 1
    assert model.invoke("What colour is the sea?").content == "Blue."
    assert [e for e in events if isinstance(e, StageFailed | CacheError)] == []
