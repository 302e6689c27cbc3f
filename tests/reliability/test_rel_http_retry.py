"""Retries of the OpenAI-compatible chat client and embedder against a real server.

A local HTTP server answers with a scripted fault per request (429 with or without
``Retry-After`` / ``retry-after-ms``, 503, 400), then 200. The wait before each
retry is observed in the ``stagecache.http`` log record (``delay_s``, what the
client decided) and, as a lower bound only, in the gap between the server-side
arrival times of the two requests (the client really slept that long).
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stagecache import Caller
from stagecache._model import Message, Turn
from stagecache.clients import OpenAIChatClient
from stagecache.embeddings import OpenAIEmbedder
from stagecache.errors import EmbeddingError, LLMError
from stagecache.testing import capture_spans

pytestmark = pytest.mark.anyio

KINDS = ["chat", "embed"]
ERRORS: dict[str, type[Exception]] = {"chat": LLMError, "embed": EmbeddingError}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[dict[str, Any]] = []  # one fault per request, then 200s
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.traceparents: list[str | None] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        arrived = time.monotonic()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.arrivals.append(arrived)
            self.server.traceparents.append(self.headers.get("traceparent"))
            step = self.server.script.pop(0) if self.server.script else {}
        if "status" in step:
            error = {"error": {"message": f"scripted {step['status']}"}}
            return self._send(step["status"], error, step.get("headers", {}))
        if self.path.endswith("/embeddings"):
            data = [
                {"object": "embedding", "index": i, "embedding": [1.0, 0.0, 0.0]}
                for i, _ in enumerate(body["input"])
            ]
            return self._send(200, {"object": "list", "data": data}, {})
        answer = {
            "id": "chatcmpl-1",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }
        self._send(200, answer, {})

    def _send(self, code: int, payload: Any, headers: dict[str, str]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


async def _call(kind: str, server: _Server, **options: Any) -> str:
    """One request through the client of ``kind``; its answer as text."""
    if kind == "chat":
        client = OpenAIChatClient(server.url, "gpt-test", "sk-test", **options)
        try:
            turn = Turn(caller=Caller(), messages=[Message(role="user", content="hi")])
            return (await client.complete(turn)).text
        finally:
            await client.aclose()
    async with OpenAIEmbedder(server.url, "emb-test", "sk-test", **options) as emb:
        return str((await emb.embed(["hi"])).shape)


def _delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The waits the client chose, from its ``stagecache.http`` retry records."""
    return [
        float(r.delay_s)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "stagecache.http" and r.getMessage() == "retrying HTTP call"
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_429_with_retry_after_waits_what_the_server_asked(
    kind: str, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stagecache.http")
    server.script = [{"status": 429, "headers": {"Retry-After": "1"}}]
    answer = await _call(kind, server, max_retries=2, backoff_s=0.01)
    assert answer in ("ok", "(1, 3)")
    assert len(server.arrivals) == 2  # one 429, one retry
    assert server.gaps()[0] >= 0.95  # it really waited (lower bound only)
    (delay,) = _delays(caplog)
    assert 1.0 <= delay <= 1.0 + 0.05  # the header, not the 10 ms backoff
    record = next(r for r in caplog.records if r.name == "stagecache.http")
    assert record.status == 429  # type: ignore[attr-defined]
    assert record.retry_after_s == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after-ms": "600"},  # OpenAI's header, in milliseconds
        {"retry-after-ms": "600", "Retry-After": "0"},  # the ms header wins
    ],
    ids=["ms", "ms-over-seconds"],
)
async def test_retry_after_ms_is_honoured(
    kind: str,
    headers: dict[str, str],
    server: _Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="stagecache.http")
    server.script = [{"status": 429, "headers": headers}]
    await _call(kind, server, max_retries=1, backoff_s=0.01)
    assert server.gaps()[0] >= 0.55
    (delay,) = _delays(caplog)
    assert 0.6 <= delay <= 0.65


@pytest.mark.parametrize("kind", KINDS)
async def test_retry_after_as_an_http_date_is_honoured(
    kind: str, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stagecache.http")
    when = email.utils.formatdate(time.time() + 3, usegmt=True)  # whole seconds
    server.script = [{"status": 503, "headers": {"Retry-After": when}}]
    await _call(kind, server, max_retries=1, backoff_s=0.01)
    assert server.gaps()[0] >= 0.95
    (delay,) = _delays(caplog)
    assert 1.0 <= delay <= 3.05  # 2-3 s from now, depending on the clock's fraction


@pytest.mark.parametrize("kind", KINDS)
async def test_429_without_retry_after_backs_off_exponentially(
    kind: str, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stagecache.http")
    server.script = [{"status": 429}, {"status": 429}]
    answer = await _call(kind, server, max_retries=2, backoff_s=0.2, max_backoff_s=5)
    assert answer in ("ok", "(1, 3)")
    assert len(server.arrivals) == 3
    gaps = server.gaps()
    assert gaps[0] >= 0.15 and gaps[1] >= 0.35
    first, second = _delays(caplog)
    # backoff_s * 2**(n-1) plus up to backoff_s of jitter
    assert 0.2 <= first <= 0.4
    assert 0.4 <= second <= 0.6


@pytest.mark.parametrize("kind", KINDS)
async def test_a_400_is_not_retried(
    kind: str, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stagecache.http")
    server.script = [{"status": 400, "headers": {"Retry-After": "0"}}]
    with pytest.raises(ERRORS[kind], match="400") as info:
        await _call(kind, server, max_retries=3, backoff_s=0.01)
    assert len(server.arrivals) == 1
    assert _delays(caplog) == []
    if kind == "chat":
        assert getattr(info.value, "status_code", None) == 400


@pytest.mark.parametrize("kind", KINDS)
async def test_gives_up_after_max_retries_naming_the_attempts(
    kind: str, server: _Server
) -> None:
    server.script = [{"status": 429, "headers": {"retry-after-ms": "10"}}] * 3
    with pytest.raises(ERRORS[kind], match="after 3 attempt") as info:
        await _call(kind, server, max_retries=2, backoff_s=0.01)
    assert "429" in str(info.value)
    assert len(server.arrivals) == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_a_longer_retry_after_than_allowed_fails_at_once(
    kind: str, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A server asking for 120 s is not hammered sooner, nor waited for: the
    error says what it asked and which setting allows it."""
    caplog.set_level(logging.WARNING, logger="stagecache.http")
    server.script = [{"status": 429, "headers": {"Retry-After": "120"}}]
    with pytest.raises(ERRORS[kind], match=r"retry after 120 s.*max_retry_after_s"):
        await _call(kind, server, max_retries=3, backoff_s=0.01, max_retry_after_s=30)
    assert len(server.arrivals) == 1
    assert _delays(caplog) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_every_attempt_carries_the_current_trace(
    kind: str, server: _Server
) -> None:
    cap = capture_spans()
    tracer = cap.provider.get_tracer("host-app")
    server.script = [{"status": 503, "headers": {"retry-after-ms": "10"}}]
    with tracer.start_as_current_span("host.handle") as outer:
        await _call(kind, server, max_retries=1, backoff_s=0.01)
    want = f"{outer.get_span_context().trace_id:032x}"
    assert len(server.traceparents) == 2
    for header in server.traceparents:
        assert header is not None and header.split("-")[1] == want


@pytest.mark.parametrize("kind", KINDS)
async def test_a_refused_connection_is_retried_then_reported(kind: str) -> None:
    options: dict[str, Any] = {"max_retries": 1, "backoff_s": 0.01}
    if kind == "chat":
        client = OpenAIChatClient("http://127.0.0.1:9/v1", "m", **options)
        try:
            turn = Turn(caller=Caller(), messages=[Message(role="user", content="hi")])
            with pytest.raises(LLMError, match=r"cannot reach .*after 2 attempts"):
                await client.complete(turn)
        finally:
            await client.aclose()
    else:
        async with OpenAIEmbedder("http://127.0.0.1:9/v1", "m", **options) as emb:
            with pytest.raises(EmbeddingError, match=r"cannot connect.*2 attempts"):
                await emb.embed(["hi"])


def test_negative_or_infinite_delays_are_refused() -> None:
    with pytest.raises(ValueError, match="backoff_s"):
        OpenAIChatClient("http://h/v1", "m", backoff_s=-1)
    with pytest.raises(ValueError, match="max_retry_after_s"):
        OpenAIEmbedder("http://h/v1", "m", max_retry_after_s=float("inf"))
