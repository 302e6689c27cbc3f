"""One trace end to end: a host's span, the proxy's incoming headers, the upstream."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from stagecache import Caller
from stagecache.clients import OpenAIChatClient
from stagecache.config import parse_config
from stagecache.embeddings import OpenAIEmbedder
from stagecache.integrations.proxy import ProxySettings, create_app
from stagecache.testing import capture_spans

sys.path.insert(0, str(Path(__file__).parents[1] / "integrations"))
from servers import ServerThread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INCOMING = {
    "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
    "tracestate": "vendor=abc",
    "baggage": "tenant=acme",
}
QUESTION = "How do I reset my password?"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingUpstream:
    """An OpenAI-compatible upstream that keeps the trace headers it received."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            ]
        )

    def _keep(self, request: Request) -> None:
        self.seen.append(
            {k: request.headers[k] for k in INCOMING if k in request.headers}
        )

    async def chat(self, request: Request) -> JSONResponse:
        self._keep(request)
        body = await request.json()
        return JSONResponse(
            {
                "id": "chatcmpl-rec1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "an answer"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4},
            }
        )

    async def embeddings(self, request: Request) -> JSONResponse:
        self._keep(request)
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        rows = [
            {"index": i, "embedding": [1.0, 0.0, 0.0, 0.0]} for i in range(len(texts))
        ]
        return JSONResponse({"data": rows, "model": body["model"]})


@pytest.fixture
def upstream() -> Iterator[tuple[RecordingUpstream, str]]:
    fake = RecordingUpstream()
    with ServerThread(fake.app) as server:
        yield fake, server.url


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


@pytest.mark.anyio
async def test_a_hosts_span_is_the_parent_of_the_request_span(
    make_pipeline: Any,
) -> None:
    cap = capture_spans()
    pipeline, _ = make_pipeline(tracer_provider=cap.provider)
    host = cap.provider.get_tracer("host-app")
    async with pipeline:
        with host.start_as_current_span("host.handle") as outer:
            result = await pipeline.run(QUESTION, caller=Caller(user_id="alice"))
    (root,) = cap.named("stagecache.request")
    assert root.parent is not None
    assert root.parent.span_id == outer.get_span_context().span_id
    assert result.trace_id == _hex(outer.get_span_context().trace_id, 32)


def test_the_proxy_joins_the_callers_trace_and_passes_it_upstream(
    upstream: tuple[RecordingUpstream, str], embedder: Any
) -> None:
    fake, url = upstream
    cap = capture_spans()
    settings = ProxySettings(
        upstream=url + "/v1", api_keys={"sk-alice": Caller(user_id="alice")}
    )
    app = create_app(
        settings,
        embedder=embedder,
        config=parse_config({"verifier": {"kind": "structural"},
                             "cache": {"timeout_s": 30.0}}),
        tracer_provider=cap.provider,
    )  # fmt: skip
    messages = [{"role": "user", "content": QUESTION}]
    body = {"model": "gpt-test", "messages": messages, "temperature": 0.2}
    headers = {"authorization": "Bearer sk-alice", **INCOMING}
    with ServerThread(app) as proxy:
        response = httpx.post(
            proxy.url + "/v1/chat/completions", json=body, headers=headers, timeout=60
        )
        # n > 1 is passed through as it is: the upstream still joins the trace.
        passthrough = httpx.post(
            proxy.url + "/v1/chat/completions",
            json={**body, "n": 2},
            headers=headers,
            timeout=60,
        )
    assert response.status_code == 200, response.text
    assert passthrough.status_code == 200, passthrough.text
    (root,) = cap.named("stagecache.request")
    assert _hex(root.context.trace_id, 32) == TRACE_ID
    assert root.parent is not None and _hex(root.parent.span_id, 16) == PARENT_ID
    (chat,) = cap.named("chat gpt-test")
    assert chat.attributes["gen_ai.response.id"] == "chatcmpl-rec1"
    assert chat.attributes["gen_ai.request.temperature"] == 0.2
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    got, passed = fake.seen
    assert passed["traceparent"].split("-")[1] == TRACE_ID
    _, trace_id, parent_id, _ = got["traceparent"].split("-")
    assert trace_id == TRACE_ID
    assert parent_id == _hex(chat.context.span_id, 16)
    assert got["tracestate"] == "vendor=abc"
    assert "tenant=acme" in got["baggage"]


@pytest.mark.anyio
async def test_the_openai_client_and_embedder_send_the_current_trace(
    upstream: tuple[RecordingUpstream, str],
) -> None:
    fake, url = upstream
    cap = capture_spans()
    tracer = cap.provider.get_tracer("host-app")
    client = OpenAIChatClient(url + "/v1", "gpt-test", max_retries=0)
    embedder = OpenAIEmbedder(url + "/v1", "emb-test", max_retries=0)
    try:
        with tracer.start_as_current_span("host.handle") as outer:
            from stagecache._model import Message, Turn

            completion = await client.complete(
                Turn(caller=Caller(), messages=[Message(role="user", content=QUESTION)])
            )
            await embedder.embed([QUESTION])
    finally:
        await client.aclose()
        await embedder.aclose()
    assert completion.response_id == "chatcmpl-rec1"
    want = _hex(outer.get_span_context().trace_id, 32)
    assert len(fake.seen) == 2
    for got in fake.seen:
        assert got["traceparent"].split("-")[1] == want
