"""Streamed misses through the proxy: live, guarded, stored at the end.

The official openai client streams through a real uvicorn proxy from a streaming
fake upstream. Order, not timing: the fake holds its last chunk back until the
client has seen the first one (a buffering proxy would keep the client waiting
until the fake gives up).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import openai
import pytest
from servers import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stagecache import Caller
from stagecache.guards import PiiRedactor, Redaction
from stagecache.integrations.proxy import ProxySettings, create_app
from stagecache.stages.output_guard import OutputGuard

KEY = "sk-stream"
GATE_WAIT_S = 5.0


class StreamingUpstream:
    """Streams scripted answers, one piece per chunk, after a role chunk.

    ``script`` maps a question to ``(pieces, finish_reason)`` (``"json"``: answer
    in one JSON body even when asked to stream; ``"break"``: drop the connection
    after the pieces, without a finish reason; ``"slow"``: a piece every 50 ms);
    ``aborted`` counts streams whose reader went away. Other questions get
    the words of ``answer to: <question>``. When ``gate`` is set, the last piece
    (or a whole non-streamed answer) waits until the test sets it
    (``gate_timed_out`` records a wait that ran out).
    """

    def __init__(self) -> None:
        self.calls = 0
        self.script: dict[str, tuple[list[str], str]] = {}
        self.gate: threading.Event | None = None
        self.gate_timed_out = False
        self.aborted = 0
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])]
        )

    async def chat(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.calls += 1
        question = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if question == "broken":
            error = {"message": "down", "type": "server_error", "param": None}
            return JSONResponse({"error": error}, status_code=503)
        pieces, finish = self.script.get(question) or (
            [f" {w}" for w in f"answer to: {question}".split()],
            "stop",
        )
        if not body.get("stream") or finish == "json":  # one JSON body
            finish = "stop" if finish == "json" else finish
            # A buffered answer waits for the gate too.
            await self._wait_gate()
            return JSONResponse(_completion("".join(pieces), finish))
        usage = (body.get("stream_options") or {}).get("include_usage", False)
        return StreamingResponse(
            self._events(pieces, finish, usage),
            media_type="text/event-stream",
            headers={"x-request-id": "req-live", "x-ratelimit-remaining-requests": "9"},
        )

    async def _wait_gate(self) -> None:
        if self.gate is not None:
            opened = await anyio.to_thread.run_sync(self.gate.wait, GATE_WAIT_S)
            self.gate_timed_out = not opened

    async def _events(
        self, pieces: list[str], finish: str, usage: bool
    ) -> AsyncIterator[bytes]:
        yield _chunk({"role": "assistant", "content": ""})
        try:
            for i, piece in enumerate(pieces):
                if finish == "slow":
                    await anyio.sleep(0.05)
                elif i == len(pieces) - 1:
                    await self._wait_gate()
                yield _chunk({"content": piece})
        except BaseException:  # the reader went away (cancelled, closed)
            self.aborted += 1
            raise
        if finish == "break":  # the upstream dies mid-answer
            raise RuntimeError("upstream crashed")
        yield _chunk({}, finish)
        if usage:
            total = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
            yield _event({**_BASE, "choices": [], "usage": total})
        yield b"data: [DONE]\n\n"


_BASE = {
    "id": "chatcmpl-live",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-test",
    "system_fingerprint": None,
}


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _event({**_BASE, "choices": [choice]})


def _completion(text: str, finish: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {**_BASE, "object": "chat.completion", "choices": [choice]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[StreamingUpstream, str]]:
    fake = StreamingUpstream()
    with ServerThread(fake.app) as server:
        yield fake, server.url


@pytest.fixture(scope="module")
def proxy(
    upstream: tuple[StreamingUpstream, str], pipeline_options: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    settings = ProxySettings(
        upstream=upstream[1] + "/v1", api_keys={KEY: Caller(user_id="streamer")}
    )
    app = create_app(settings, **pipeline_options)
    with ServerThread(app) as server:
        yield server.url, app


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)


def _open(url: str, text: str, **options: Any) -> tuple[Any, str]:
    raw = _client(url).chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": text}],
        stream=True,
        **options,
    )
    return raw.parse(), raw.headers["x-stagecache"]


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_streamed_miss_reaches_the_client_while_the_upstream_streams(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "How do streams flow through the proxy?"
    fake.gate, fake.gate_timed_out = threading.Event(), False
    try:
        stream, outcome = _open(proxy[0], question)
        chunks: list[Any] = []
        for chunk in stream:
            chunks.append(chunk)
            if _text(chunks):  # the first text: let the upstream finish
                fake.gate.set()
    finally:
        fake.gate.set()
        fake.gate = None
    assert outcome == "miss"
    assert not fake.gate_timed_out, "the client saw no text before the upstream ended"
    assert _text(chunks) == " answer to: How do streams flow through the proxy?"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # Stored at the end: the same question is now a hit, streamed as before.
    calls = fake.calls
    hit, outcome = _open(proxy[0], question)
    hit_chunks = list(hit)
    assert outcome == "hit"
    assert fake.calls == calls
    assert _text(hit_chunks) == _text(chunks)


def test_usage_is_forwarded_when_asked(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    stream, _ = _open(
        proxy[0], "What does usage look like?", stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 12


def test_pii_split_across_chunks_never_reaches_the_client(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "Where do I send the payment?"
    pieces = [
        "Mail bob.sm",
        "ith@exam",
        "ple.com or pay 4111 11",
        "11 1111 1111 from DE89 3704 00",
        "44 0532 0130 00 today",
        ".",
    ]
    fake.script[question] = (pieces, "stop")
    stream, outcome = _open(proxy[0], question)
    chunks = list(stream)
    assert outcome == "miss"
    text = _text(chunks)
    assert text == (
        "Mail [REDACTED:EMAIL] or pay [REDACTED:CARD] from [REDACTED:IBAN] today."
    )
    for chunk in chunks:
        piece = _text([chunk])
        for secret in ("bob", "ith@", "4111", "11 1111", "DE89", "0130"):
            assert secret not in piece
    # A redacted answer is never stored: the next ask goes upstream again.
    calls = fake.calls
    _, outcome = _open(proxy[0], question)
    assert outcome == "miss"
    assert fake.calls == calls + 1


def test_an_unfinished_stream_is_not_stored(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "Tell me a very long story about caches."
    fake.script[question] = ([" Once", " upon", " a"], "length")
    stream, _ = _open(proxy[0], question)
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert _text(chunks) == " Once upon a"
    calls = fake.calls
    again, outcome = _open(proxy[0], question)
    list(again)
    assert outcome == "miss"
    assert fake.calls == calls + 1


class _FailingRedactor(PiiRedactor):
    """An injected fault: the detectors crash on a text with ``BOOM``."""

    def redact(self, text: str) -> Redaction:
        if "BOOM" in text:
            raise RuntimeError("detector crashed")
        return super().redact(text)


def test_a_guard_failure_mid_stream_ends_it_with_a_refusal(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    guard = next(
        s for s in proxy[1].state.proxy.pipeline.stages if isinstance(s, OutputGuard)
    )
    question = "Say something explosive."
    fake.script[question] = ([" Fine", " start.", " then BOOM", " secret tail"], "stop")
    original = guard._redactor
    guard._redactor = _FailingRedactor()
    try:
        stream, outcome = _open(proxy[0], question)
        chunks = list(stream)
        calls = fake.calls
        again, outcome_again = _open(proxy[0], question)
        list(again)
    finally:
        guard._redactor = original
    text = _text(chunks)
    assert "BOOM" not in text and "secret" not in text
    last = chunks[-1].choices[0]
    assert last.finish_reason == "content_filter"
    assert last.delta.refusal
    assert outcome == "miss"
    assert outcome_again == "miss" and fake.calls == calls + 1  # never stored


def test_an_upstream_error_on_a_streamed_miss_keeps_its_status(
    proxy: tuple[str, Any],
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _open(proxy[0], "broken")
    assert caught.value.status_code == 503


def test_an_upstream_that_breaks_off_is_not_stored(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "What happens when the line drops?"
    fake.script[question] = ([" It", " stops", " half"], "break")
    stream, _ = _open(proxy[0], question)
    chunks = list(stream)
    assert _text(chunks) == " It stops half"
    assert all(c.choices[0].finish_reason is None for c in chunks if c.choices)
    calls = fake.calls
    again, outcome = _open(proxy[0], question)
    list(again)
    assert outcome == "miss"
    assert fake.calls == calls + 1


def test_an_upstream_that_answers_json_to_a_stream_is_replayed(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "Do you stream at all?"
    fake.script[question] = ([" No,", " one body."], "json")
    calls = fake.calls
    stream, outcome = _open(proxy[0], question)
    chunks = list(stream)
    assert outcome == "miss" and fake.calls == calls + 1  # one upstream call
    assert _text(chunks) == " No, one body."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_live_stream_forwards_the_upstream_headers(proxy: tuple[str, Any]) -> None:
    raw = _client(proxy[0]).chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "user", "content": "Which request id is this?"}],
        stream=True,
    )
    list(raw.parse())
    assert raw.headers["x-stagecache"] == "miss"
    assert raw.headers["x-request-id"] == "req-live"
    assert raw.headers["x-ratelimit-remaining-requests"] == "9"


def test_no_store_on_a_streamed_miss_is_honoured(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "Is this answer kept for later?"
    first, outcome = _open(proxy[0], question, extra_body={"cache": {"no-store": True}})
    assert _text(list(first)) == " answer to: Is this answer kept for later?"
    assert outcome == "miss"
    calls = fake.calls
    again, outcome = _open(proxy[0], question)
    list(again)
    assert outcome == "miss" and fake.calls == calls + 1


def test_a_client_that_leaves_stops_the_upstream_stream(
    proxy: tuple[str, Any], upstream: tuple[StreamingUpstream, str]
) -> None:
    fake = upstream[0]
    question = "Tell me everything, slowly."
    fake.script[question] = ([f" word{i}" for i in range(400)], "slow")
    aborted = fake.aborted
    body = {
        "model": "gpt-test",
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", proxy[0] + "/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.headers["x-stagecache"] == "miss"
        for line in response.iter_lines():
            if "word1" in line:
                break  # seen some text: leave
    # The 400 pieces would take 20 s; the upstream stream ends long before.
    deadline = time.monotonic() + 15
    while fake.aborted == aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.aborted == aborted + 1
