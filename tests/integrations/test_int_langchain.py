"""LangChain: the semantic cache through set_llm_cache, and the Runnable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import stagecache
from stagecache.integrations.langchain import (
    StagecacheLangChainCache,
    StagecacheRunnable,
)

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
