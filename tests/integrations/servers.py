"""A fake OpenAI-compatible upstream and a uvicorn runner, for tests and examples."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class FakeUpstream:
    """Answers ``answer to: <last user message>``; counts its calls.

    ``gone-model`` gets a 404 and ``broken`` a 500, in OpenAI's error shape;
    ``rate-limited`` a 429 with ``retry-after: 7``; ``html`` a 200 whose body is an
    HTML page; ``slow`` an answer after ``slow_s`` seconds. Every chat answer
    carries OpenAI's response headers (``x-request-id: req-up<calls>``,
    ``x-ratelimit-*``, ``openai-processing-ms``). With ``keys``, it checks
    ``Authorization: Bearer <key>`` as OpenAI does (401 otherwise); ``calls``
    counts the chat requests past those checks, ``refused`` the requests refused
    for their key. ``/v1/embeddings`` answers a vector per text (``embedded``
    lists every text it was sent); ``/v1/completions`` and ``/v1/responses`` echo
    the request (``echoed`` lists the bodies, ``authorizations`` the credentials).
    """

    def __init__(
        self,
        delay_s: float = 0.0,
        keys: frozenset[str] | None = None,
        slow_s: float = 2.0,
    ) -> None:
        self.calls = 0
        self.refused = 0
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.keys = keys
        self.embedded: list[str] = []
        self.echoed: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/completions", self.echo, methods=["POST"]),
                Route("/v1/responses", self.echo, methods=["POST"]),
            ]
        )

    def _headers(self) -> dict[str, str]:
        return {
            "x-request-id": f"req-up{self.calls}",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "openai-processing-ms": "42",
        }

    async def echo(self, request: Request) -> Response:
        if refused := self._unauthorized(request):
            return refused
        body = json.loads(await request.body())
        self.echoed.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        return JSONResponse(
            {"object": "echo", "path": request.url.path, "body": body},
            headers={"x-request-id": f"req-echo{len(self.echoed)}"},
        )

    async def embeddings(self, request: Request) -> Response:
        if refused := self._unauthorized(request):
            return refused
        body = json.loads(await request.body())
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.embedded.extend(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(text)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers={"x-request-id": f"req-emb{len(self.embedded)}"},
        )

    def _unauthorized(self, request: Request) -> Response | None:
        if self.keys is None:
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key in self.keys:
            return None
        self.refused += 1
        error = {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        return JSONResponse({"error": error}, status_code=401)

    async def models(self, request: Request) -> Response:
        if refused := self._unauthorized(request):
            return refused
        data = [{"id": "gpt-test", "object": "model", "created": 0, "owned_by": "t"}]
        return JSONResponse({"object": "list", "data": data})

    async def chat(self, request: Request) -> Response:
        import anyio

        if refused := self._unauthorized(request):
            return refused
        body = json.loads(await request.body())
        model, messages = body.get("model"), body.get("messages")
        if not model or not messages:
            error = {
                "message": "'model' and 'messages' are required",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            return JSONResponse({"error": error}, status_code=400)
        self.calls += 1
        if model == "rate-limited":
            error = {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
            headers = {**self._headers(), "retry-after": "7"}
            headers["x-ratelimit-remaining-requests"] = "0"
            return JSONResponse({"error": error}, status_code=429, headers=headers)
        if model == "html":
            return Response(
                "<html><body>502 Bad Gateway</body></html>",
                media_type="text/html",
                headers=self._headers(),
            )
        if model == "slow":
            await anyio.sleep(self.slow_s)
        if model in ("gone-model", "broken"):
            status = 404 if model == "gone-model" else 500
            error = {
                "message": f"upstream says {status}",
                "type": "invalid_request_error" if status == 404 else "server_error",
                "param": None,
                "code": "model_not_found" if status == 404 else None,
            }
            return JSONResponse(
                {"error": error}, status_code=status, headers=self._headers()
            )
        if self.delay_s:
            await anyio.sleep(self.delay_s)
        question = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        answer = f"answer to: {question}"
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                _stream(answer, model, created),
                media_type="text/event-stream",
                headers=self._headers(),
            )
        return JSONResponse(
            {
                "id": f"chatcmpl-up{self.calls}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": answer,
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 9,
                    "completion_tokens": 4,
                    "total_tokens": 13,
                },
                "system_fingerprint": None,
            },
            headers=self._headers(),
        )


def _vector(text: str) -> list[float]:
    """A unit vector of 8 floats that depends only on ``text``."""
    import hashlib
    import math

    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 127.5 for b in digest[:8]]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


async def _stream(answer: str, model: str, created: int) -> AsyncIterator[bytes]:
    base = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
    }
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        *(({"content": answer[i : i + 8]}, None) for i in range(0, len(answer), 8)),
        ({}, "stop"),
    ]
    for delta, finish in deltas:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()
    yield b"data: [DONE]\n\n"


class ServerThread:
    """Runs an ASGI app with uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
