"""The request fingerprint and per-request cache control, everywhere.

Every parameter that changes the answer is part of the key (after a plain request,
a request with it misses), some make the request uncacheable (``n > 1``), and the
cache control of LiteLLM's spelling (``no-cache``, ``no-store``, ``ttl``,
``s-maxage``, ``namespace``, the ``Cache-Control`` header) is honoured by the
Python API, the proxy (driven by the official ``openai`` client) and AutoGen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
from autogen_core.models import CreateResult, RequestUsage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient
from servers import FakeUpstream, ServerThread

import stagecache
from stagecache import InputError
from stagecache.integrations.autogen import StagecacheChatCompletionClient
from stagecache.integrations.proxy import ProxySettings, create_app
from stagecache.pipeline._events import CacheStore
from stagecache.testing import ScriptedLLM, capture_events

ALICE = stagecache.Caller(user_id="alice")
KEY = "sk-alice"
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look an order up.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    },
}
OTHER_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        **TOOL["function"],
        "parameters": {"type": "object", "properties": {"sku": {"type": "integer"}}},
    },
}
OTHER_DESCRIPTION: dict[str, Any] = {
    "type": "function",
    "function": {**TOOL["function"], "description": "Cancel an order."},
}

#: Each changes the answer: after a plain request, each must miss.
ANSWER_CHANGING: dict[str, dict[str, Any]] = {
    "json_mode": {"response_format": {"type": "json_object"}},
    "max_tokens": {"max_tokens": 8},
    "max_completion_tokens": {"max_completion_tokens": 8},
    "temperature": {"temperature": 1.7},
    "top_p": {"top_p": 0.1},
    "seed": {"seed": 7},
    "stop": {"stop": ["\n"]},
    "presence_penalty": {"presence_penalty": 1.5},
    "logit_bias": {"logit_bias": {"1234": -100}},
    "reasoning_effort": {"reasoning_effort": "high"},
    "unknown_param": {"some_new_knob": 3},
}


# -- the policy itself -------------------------------------------------------------


def test_equivalent_spellings_share_a_fingerprint() -> None:
    from stagecache._request_params import request_params

    a = request_params({"temperature": 1, "stop": "x", "logit_bias": {"1": 2, "3": 4}})
    b = request_params(
        {"temperature": 1.0, "stop": ["x", "x"], "logit_bias": {"3": 4, "1": 2}}
    )
    assert a.fingerprint == b.fingerprint != ""
    assert request_params({"n": 1.0, "stream": True, "user": "u"}).fingerprint == ""
    assert request_params({"tool_choice": "auto"}).fingerprint == ""


@pytest.mark.parametrize("n", [2, 2.0, 3.5])
def test_several_choices_in_any_numeric_form_are_not_cached(n: float) -> None:
    from stagecache._request_params import request_params

    params = request_params({"n": n})
    assert params.uncacheable == "param_n" and params.several_choices


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"temperature": float("nan")}, "params.temperature"),
        ({"n": "2"}, "params.n"),
        ({"seed": True}, "params.seed"),
        ({"response_format": {"x": float("inf")}}, "params.response_format"),
        ({"stop": ["\ud800"]}, "params"),
    ],
)
def test_bad_parameter_values_are_input_errors(
    params: dict[str, Any], field: str
) -> None:
    from stagecache._request_params import request_params

    with pytest.raises(InputError, match=re.escape(field)):
        request_params(params)


def test_docs_table_matches_the_policy() -> None:
    from stagecache._request_params import policy_markdown

    docs = Path(__file__).parents[2] / "docs" / "integrations.md"
    text = docs.read_text(encoding="utf-8")
    start, end = "<!-- request-params:start -->", "<!-- request-params:end -->"
    assert start in text and end in text, "docs/integrations.md lost its markers"
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == policy_markdown()


def test_cache_control_header_and_body_merge_body_first() -> None:
    from stagecache._cachecontrol import http_cache_control

    header = 'no-store, max-age=60, s-maxage="30", private, no-transform'
    control = http_cache_control({"ttl": 5, "namespace": "a"}, header)
    assert control == stagecache.CacheControl(
        no_store=True, s_maxage=30, ttl=5, namespace="a"
    )
    assert http_cache_control(None, "private") is None
    assert http_cache_control({"no-store": False}, "no-store, max-age=9") == (
        stagecache.CacheControl(s_maxage=9)
    )


# -- the Python API ------------------------------------------------------------------


class _Recording(ScriptedLLM):
    """The scripted model, remembering the parameters each call got."""

    def __init__(self) -> None:
        super().__init__(lambda q: f"answer to: {q}")
        self.params: list[dict[str, Any]] = []

    async def complete(self, turn: stagecache.Turn) -> Any:
        self.params.append(dict(turn.params))
        return await super().complete(turn)


@pytest.fixture
def api(pipeline_options: dict[str, Any]) -> Iterator[tuple[Any, _Recording]]:
    llm = _Recording()
    yield stagecache.Pipeline.default(llm=llm, **pipeline_options), llm


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(ANSWER_CHANGING))
async def test_api_each_answer_changing_parameter_misses(
    api: tuple[Any, _Recording], case: str
) -> None:
    pipeline, llm = api
    params = ANSWER_CHANGING[case]
    q = "How do I reset my password?"
    async with pipeline:
        await pipeline.run(q, caller=ALICE)
        assert (await pipeline.run(q, caller=ALICE)).cache.hit
        with_params = await pipeline.run(q, caller=ALICE, params=params)
        again = await pipeline.run(q, caller=ALICE, params=params)
        plain = await pipeline.run(q, caller=ALICE)
    assert with_params.cache.status == "miss" and with_params.cache.stored
    assert llm.params[-1] == params  # the model client got them
    assert again.cache.hit and plain.cache.hit
    assert llm.calls == 2


@pytest.mark.anyio
async def test_api_a_tool_with_another_schema_or_description_misses(
    api: tuple[Any, _Recording],
) -> None:
    pipeline, llm = api
    q = "Where is my order?"

    def spec(tool: dict[str, Any]) -> dict[str, Any]:
        fn = tool["function"]
        return {k: fn[k] for k in ("name", "description", "parameters")}

    async with pipeline:
        await pipeline.run(q, caller=ALICE, tools=[spec(TOOL)])
        assert (await pipeline.run(q, caller=ALICE, tools=[spec(TOOL)])).cache.hit
        schema = await pipeline.run(q, caller=ALICE, tools=[spec(OTHER_SCHEMA)])
        described = await pipeline.run(q, caller=ALICE, tools=[spec(OTHER_DESCRIPTION)])
    assert schema.cache.status == described.cache.status == "miss"
    assert llm.calls == 3


@pytest.mark.anyio
async def test_api_n_above_one_and_logprobs_are_not_cached(
    api: tuple[Any, _Recording],
) -> None:
    pipeline, llm = api
    q = "What is the capital of France?"
    async with pipeline:
        await pipeline.run(q, caller=ALICE)
        several = await pipeline.run(q, caller=ALICE, params={"n": 2.0})
        logprobs = await pipeline.run(q, caller=ALICE, params={"logprobs": True})
    assert several.cache.status == "skip" and several.cache.reason == "param_n"
    assert logprobs.cache.status == "skip" and not logprobs.cache.stored
    assert llm.calls == 3


@pytest.mark.anyio
async def test_api_cache_control(api: tuple[Any, _Recording]) -> None:
    pipeline, llm = api
    q = "How long does shipping take?"
    async with pipeline:
        with capture_events(pipeline.events) as events:
            first = await pipeline.run(q, caller=ALICE, cache={"ttl": 30})
        fresh = await pipeline.run(q, caller=ALICE, cache={"no-cache": True})
        hit = await pipeline.run(q, caller=ALICE)
        too_old = await pipeline.run(q, caller=ALICE, cache={"s-maxage": 0})
        in_ns = await pipeline.run(q, caller=ALICE, cache={"namespace": "eu"})
        in_ns_again = await pipeline.run(
            q, caller=ALICE, cache=stagecache.CacheControl(namespace="eu")
        )
        other_ns = await pipeline.run(q, caller=ALICE, cache={"namespace": "us"})
        q2 = "Do you ship to Norway?"
        no_store = await pipeline.run(q2, caller=ALICE, cache={"no-store": True})
        after_no_store = await pipeline.run(q2, caller=ALICE)
    stores = events.of(CacheStore)
    assert first.cache.stored and [e.ttl_s for e in stores] == [30]  # type: ignore[attr-defined]
    assert fresh.cache.status == "miss" and fresh.cache.reason == "no_cache"
    assert fresh.cache.stored  # no-cache still stores
    assert hit.cache.hit
    assert too_old.cache.status == "miss"
    assert too_old.cache.reason == "older_than_s_maxage"
    assert in_ns.cache.status == "miss" and in_ns_again.cache.hit
    assert other_ns.cache.status == "miss"
    assert no_store.cache.status == "miss" and not no_store.cache.stored
    assert after_no_store.cache.status == "miss"
    assert llm.calls == 7


@pytest.mark.anyio
async def test_api_ttl_of_the_stored_entry_is_honoured(
    api: tuple[Any, _Recording],
) -> None:
    pipeline, _ = api
    q = "Can I pay with a gift card?"
    async with pipeline:
        await pipeline.run(q, caller=ALICE, cache={"ttl": 1})
        await anyio.sleep(1.2)  # the entry's own TTL passes
        after = await pipeline.run(q, caller=ALICE)
    assert after.cache.status == "miss"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "cache",
    [{"no-cache": "yes"}, {"bogus": 1}, {"ttl": -1}, {"namespace": ""}, "no-cache"],
)
async def test_api_bad_cache_control_is_an_input_error(
    api: tuple[Any, _Recording], cache: Any
) -> None:
    pipeline, llm = api
    async with pipeline:
        with pytest.raises(InputError, match="cache"):
            await pipeline.run("hello there", caller=ALICE, cache=cache)
    assert llm.calls == 0


@pytest.mark.anyio
async def test_api_params_reach_an_openai_compatible_model(
    pipeline_options: dict[str, Any],
) -> None:
    import json

    from stagecache.clients import OpenAIChatClient

    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        message = {"role": "assistant", "content": '{"ok": true}'}
        return httpx.Response(200, json={"choices": [{"message": message}]})

    llm = OpenAIChatClient(
        "http://model.invalid/v1", "m", transport=httpx.MockTransport(answer)
    )
    pipeline = stagecache.Pipeline.default(llm=llm, **pipeline_options)
    params = {"response_format": {"type": "json_object"}, "temperature": 0.2}
    async with pipeline:
        await pipeline.run("Give me my order as JSON.", caller=ALICE, params=params)
    await llm.aclose()
    assert bodies[0]["response_format"] == {"type": "json_object"}
    assert bodies[0]["temperature"] == 0.2 and bodies[0]["model"] == "m"


# -- the proxy, through the official openai client ---------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with ServerThread(fake.app) as server:
        yield fake, server.url


@pytest.fixture(scope="module")
def proxy_url(
    upstream: tuple[FakeUpstream, str], pipeline_options: dict[str, Any]
) -> Iterator[str]:
    settings = ProxySettings(upstream=upstream[1] + "/v1", api_keys={KEY: ALICE})
    with ServerThread(create_app(settings, **pipeline_options)) as server:
        yield server.url


def _ask(url: str, text: str, **extra: Any) -> tuple[Any, httpx.Headers]:
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": text}], **extra
    )
    return raw.parse(), raw.headers


PROXY_CASES: dict[str, dict[str, Any]] = {
    **ANSWER_CHANGING,
    "unknown_param": {"extra_body": {"some_new_knob": 3}},
    "reasoning_effort": {"reasoning_effort": "high"},
    "tool_choice_required": {"tools": [TOOL], "tool_choice": "required"},
    "tool_schema": {"tools": [OTHER_SCHEMA]},
    "tool_description": {"tools": [OTHER_DESCRIPTION]},
}


def test_proxy_each_answer_changing_parameter_misses(
    proxy_url: str, upstream: tuple[FakeUpstream, str]
) -> None:
    fake = upstream[0]
    q = "How do I update my billing address?"
    _ask(proxy_url, q, tools=[TOOL])
    assert _ask(proxy_url, q, tools=[TOOL])[1]["x-stagecache"] == "hit"
    for name, extra in PROXY_CASES.items():
        if "tools" not in extra:
            _ask(proxy_url, q)  # the plain request (stored on its first pass)
            assert _ask(proxy_url, q)[1]["x-stagecache"] == "hit", name
        calls = fake.calls
        _, headers = _ask(proxy_url, q, **extra)
        assert headers["x-stagecache"] == "miss", name
        assert fake.calls == calls + 1, name
        _, again = _ask(proxy_url, q, **extra)
        assert again["x-stagecache"] == "hit", name


def test_proxy_n_as_a_float_passes_through(
    proxy_url: str, upstream: tuple[FakeUpstream, str]
) -> None:
    q = "Which plans do you offer?"
    _ask(proxy_url, q)
    calls = upstream[0].calls
    _, headers = _ask(proxy_url, q, n=2.0)
    assert headers["x-stagecache"] == "skip" and upstream[0].calls == calls + 1


def test_proxy_cache_control(
    proxy_url: str, upstream: tuple[FakeUpstream, str]
) -> None:
    fake = upstream[0]
    q = "What is your refund policy?"
    _ask(proxy_url, q, extra_body={"cache": {"ttl": 300}})
    _, hit = _ask(proxy_url, q)
    assert hit["x-stagecache"] == "hit" and int(hit["x-stagecache-age"]) >= 0
    calls = fake.calls
    _, bypass = _ask(proxy_url, q, extra_headers={"Cache-Control": "no-cache"})
    assert bypass["x-stagecache"] == "bypass" and fake.calls == calls + 1
    _, body_bypass = _ask(proxy_url, q, extra_body={"cache": {"no-cache": True}})
    assert body_bypass["x-stagecache"] == "bypass"
    metrics = httpx.get(proxy_url + "/metrics").text
    assert 'outcome="bypass"' in metrics  # counted as a bypass, not an error
    _, old = _ask(proxy_url, q, extra_headers={"Cache-Control": "max-age=0"})
    assert old["x-stagecache"] == "miss"
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key=KEY, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": q}],
        stream=True,
        extra_headers={"Cache-Control": "no-cache"},
    ) as streamed:
        assert streamed.headers["x-stagecache"] == "bypass"
        assert "".join(streamed.iter_text()).count("chat.completion.chunk") > 1
    _, ns = _ask(proxy_url, q, extra_body={"cache": {"namespace": "team-a"}})
    _, ns_again = _ask(proxy_url, q, extra_body={"cache": {"namespace": "team-a"}})
    assert ns["x-stagecache"] == "miss" and ns_again["x-stagecache"] == "hit"
    q2 = "Do you have a student discount?"
    _, first = _ask(proxy_url, q2, extra_headers={"Cache-Control": "no-store"})
    _, second = _ask(proxy_url, q2, extra_body={"cache": {"no-store": True}})
    _, third = _ask(proxy_url, q2)
    assert [h["x-stagecache"] for h in (first, second, third)] == ["miss"] * 3


def test_proxy_cache_ttl_expires(proxy_url: str) -> None:
    q = "Is there a mobile app?"
    _ask(proxy_url, q, extra_body={"cache": {"ttl": 1}})
    time.sleep(1.2)  # the entry's own TTL passes
    assert _ask(proxy_url, q)[1]["x-stagecache"] == "miss"


@pytest.mark.parametrize(
    "extra",
    [
        {"extra_body": {"cache": {"ttl": "soon"}}},
        {"extra_body": {"cache": {"no-cache": "yes"}}},
        {"extra_body": {"cache": {"max_age": 5}}},
        {"extra_headers": {"Cache-Control": "max-age=soon"}},
    ],
)
def test_proxy_bad_cache_control_or_param_is_an_openai_400(
    proxy_url: str, upstream: tuple[FakeUpstream, str], extra: dict[str, Any]
) -> None:
    calls = upstream[0].calls
    with pytest.raises(openai.BadRequestError) as info:
        _ask(proxy_url, "Are you open on Sundays?", **extra)
    assert info.value.status_code == 400 and info.value.type == "invalid_request_error"
    assert upstream[0].calls == calls


def test_proxy_non_finite_parameter_is_an_openai_400(
    proxy_url: str, upstream: tuple[FakeUpstream, str]
) -> None:
    calls = upstream[0].calls
    body = (
        b'{"model": "gpt-test", "temperature": NaN,'
        b' "messages": [{"role": "user", "content": "Are you open?"}]}'
    )
    response = httpx.post(
        proxy_url + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "temperature"
    assert upstream[0].calls == calls


# -- AutoGen --------------------------------------------------------------------------


def _text(text: str) -> CreateResult:
    usage = RequestUsage(prompt_tokens=10, completion_tokens=5)
    return CreateResult(finish_reason="stop", content=text, usage=usage, cached=False)


@pytest.mark.anyio
async def test_autogen_extra_create_args_and_json_output_are_keyed(
    pipeline_options: dict[str, Any],
) -> None:
    inner = ReplayChatCompletionClient(
        [_text(f"answer {i}") for i in range(8)],
        model_info={
            "vision": False,
            "function_calling": True,
            "json_output": True,
            "family": "unknown",
            "structured_output": True,
        },
    )
    client = StagecacheChatCompletionClient.default(
        inner, caller=ALICE, model="replay", **pipeline_options
    )
    ask = [UserMessage(content="Summarise my last order.", source="user")]
    async with client.pipeline:
        plain = await client.create(ask)
        assert (await client.create(ask)).cached
        hot = await client.create(ask, extra_create_args={"temperature": 1.7})
        short = await client.create(ask, extra_create_args={"max_tokens": 1})
        short_again = await client.create(ask, extra_create_args={"max_tokens": 1})
        as_json = await client.create(ask, json_output=True)
        required = await client.create(ask, tool_choice="required")
        fresh = await client.create(
            ask, extra_create_args={"cache": {"no-cache": True}}
        )
    assert plain.content == "answer 0"
    assert not hot.cached and hot.content == "answer 1"
    assert not short.cached and short_again.cached and short_again.content == "answer 2"
    assert not as_json.cached and not required.cached
    assert not fresh.cached and client.last_result is not None
    assert client.last_result.cache.reason == "no_cache"
    assert int(inner._current_index) == 6


# -- LangChain ------------------------------------------------------------------------


def test_langchain_runnable_call_keywords_are_keyed_and_cache_passes_through(
    pipeline_options: dict[str, Any],
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from stagecache.integrations.langchain import StagecacheRunnable

    model = FakeListChatModel(responses=[f"answer {i}" for i in range(6)])
    runnable = StagecacheRunnable(model, caller=ALICE, **pipeline_options)
    q = "How do I change my email address?"
    try:
        plain = runnable.invoke(q)
        hit = runnable.invoke(q)
        stopped = runnable.invoke(q, stop=["\n"])
        stopped_again = runnable.invoke(q, stop="\n")
        fresh = runnable.invoke(q, cache={"no-cache": True})
    finally:
        runnable.close()
    meta = [m.response_metadata["stagecache"]["cache"] for m in (plain, hit)]
    assert meta == ["miss", "hit"]
    assert stopped.content == "answer 1"
    assert stopped.response_metadata["stagecache"]["cache"] == "miss"
    assert stopped_again.response_metadata["stagecache"]["cache"] == "hit"
    assert fresh.content == "answer 2"
    assert runnable.last_result is not None
    assert runnable.last_result.cache.reason == "no_cache"


def test_langchain_cache_does_not_cache_several_choices_or_no_store(
    pipeline_options: dict[str, Any],
) -> None:
    from langchain_core.outputs import Generation

    from stagecache.integrations.langchain import StagecacheLangChainCache

    cache = StagecacheLangChainCache(caller=ALICE, **pipeline_options)
    no_store = StagecacheLangChainCache(
        caller=ALICE, cache_control={"no-store": True}, **pipeline_options
    )
    prompt = "Which countries do you ship to?"
    plain, several = "[('model', 'm'), ('n', 1)]", "[('model', 'm'), ('n', 2)]"
    try:
        for llm_string in (plain, several):
            assert cache.lookup(prompt, llm_string) is None
            cache.update(prompt, llm_string, [Generation(text="Most of Europe.")])
        assert cache.lookup(prompt, plain) is not None
        assert cache.lookup(prompt, several) is None
        cache.update(prompt, several, [Generation(text="Most of Europe.")])
        assert cache.last_result is not None
        assert cache.last_result.cache.reason == "param_n"
        assert no_store.lookup(prompt, plain) is None
        no_store.update(prompt, plain, [Generation(text="Most of Europe.")])
        assert no_store.lookup(prompt, plain) is None
    finally:
        cache.close()
        no_store.close()


def test_a_plain_request_keys_as_entries_stored_by_older_versions() -> None:
    """Pinned from the code before the request fingerprint: old databases keep
    answering plain requests (no parameters, no tools)."""
    from stagecache._model import Message, Turn
    from stagecache.stages._keys import key_parts

    turn = Turn(
        caller=ALICE,
        messages=[Message(role="user", content="hi")],
        model="m",
        instructions="be brief",
    )
    parts = key_parts(turn, "emb", multi_turn=False)
    assert parts.context_fingerprint == "643d5437104296e21d906ecb15b2c96a"
    turn.params_fingerprint = "f" * 32
    assert key_parts(turn, "emb", multi_turn=False).context_fingerprint != (
        "643d5437104296e21d906ecb15b2c96a"
    )
