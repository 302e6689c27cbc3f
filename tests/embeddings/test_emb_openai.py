"""OpenAIEmbedder against a real local HTTP server speaking /v1/embeddings."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from stagecache.embeddings import OpenAIEmbedder
from stagecache.errors import EmbeddingError

pytestmark = pytest.mark.anyio
DIM = 8


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b - 127.5 for b in digest[:DIM]]  # deliberately not normalised


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[dict[str, Any]] = []  # one fault per request, then 200s
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(
                {
                    "path": self.path,
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
            )
            step = self.server.script.pop(0) if self.server.script else {}
        if "sleep" in step:
            time.sleep(step["sleep"])
        if self.path != "/v1/embeddings":
            return self._send(404, {"error": {"message": "not found"}})
        if "status" in step:
            return self._send(
                step["status"], {"error": {"message": "boom"}}, step.get("headers")
            )
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": _vector(t)}
            for i, t in enumerate(body["input"])
        ]
        if step.get("nan"):
            data[0]["embedding"][0] = float("nan")
        if step.get("short"):
            data = data[:-1]
        if step.get("dim"):
            data[0]["embedding"] = data[0]["embedding"][: step["dim"]]
        data.reverse()  # servers may answer out of order: "index" decides
        self._send(200, {"object": "list", "data": data, "model": body["model"]})

    def _send(
        self, code: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(payload, allow_nan=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
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


def _embedder(server: _Server, **kwargs: Any) -> OpenAIEmbedder:
    kwargs.setdefault("backoff_s", 0.01)
    return OpenAIEmbedder(server.url, "test-embed", "sk-test", **kwargs)


async def test_embeds_in_order_normalised_and_authenticated(server: _Server) -> None:
    async with _embedder(server) as embedder:
        out = await embedder.embed(["alpha", "beta", "gamma"])
    expected = np.array([_vector(t) for t in ["alpha", "beta", "gamma"]], np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert embedder.dim == DIM
    assert server.requests[0]["auth"] == "Bearer sk-test"
    assert server.requests[0]["body"]["model"] == "test-embed"


async def test_large_input_is_sent_in_batches(server: _Server) -> None:
    async with _embedder(server, batch_size=4) as embedder:
        out = await embedder.embed([f"text {i}" for i in range(10)])
    assert out.shape == (10, DIM)
    assert [len(r["body"]["input"]) for r in server.requests] == [4, 4, 2]


async def test_retries_a_500_then_succeeds(server: _Server) -> None:
    server.script = [{"status": 500}, {"status": 503}]
    async with _embedder(server, max_retries=3) as embedder:
        out = await embedder.embed(["alpha"])
    assert out.shape == (1, DIM)
    assert len(server.requests) == 3


async def test_retries_429_honouring_retry_after(server: _Server) -> None:
    server.script = [{"status": 429, "headers": {"Retry-After": "0"}}]
    async with _embedder(server) as embedder:
        await embedder.embed(["alpha"])
    assert len(server.requests) == 2


async def test_gives_up_after_max_retries_with_a_clear_message(server: _Server) -> None:
    server.script = [{"status": 500}] * 3
    async with _embedder(server, max_retries=2) as embedder:
        with pytest.raises(EmbeddingError) as info:
            await embedder.embed(["alpha"])
    message = str(info.value)
    assert "HTTP 500" in message and server.url in message and "hint" in message
    assert "3 attempt" in message


async def test_client_error_is_not_retried(server: _Server) -> None:
    server.script = [{"status": 401}]
    async with _embedder(server) as embedder:
        with pytest.raises(EmbeddingError, match="API key"):
            await embedder.embed(["alpha"])
    assert len(server.requests) == 1


async def test_wrong_path_gives_a_base_url_hint(server: _Server) -> None:
    embedder = OpenAIEmbedder(server.url + "/nope", "m", backoff_s=0.01)
    async with embedder:
        with pytest.raises(EmbeddingError, match="base_url"):
            await embedder.embed(["alpha"])


async def test_timeout_is_retried_then_reported(server: _Server) -> None:
    server.script = [{"sleep": 0.5}, {"sleep": 0.5}]
    async with _embedder(server, timeout_s=0.1, max_retries=1) as embedder:
        with pytest.raises(EmbeddingError, match="timed out"):
            await embedder.embed(["alpha"])
    assert len(server.requests) == 2


async def test_timeout_then_success(server: _Server) -> None:
    server.script = [{"sleep": 0.5}]
    async with _embedder(server, timeout_s=0.1, max_retries=2) as embedder:
        out = await embedder.embed(["alpha"])
    assert out.shape == (1, DIM)


async def test_connection_refused_is_an_embedding_error() -> None:
    embedder = OpenAIEmbedder(
        "http://127.0.0.1:9/v1", "m", max_retries=1, backoff_s=0.01
    )
    async with embedder:
        with pytest.raises(EmbeddingError, match="cannot connect"):
            await embedder.embed(["alpha"])


@pytest.mark.parametrize(
    ("step", "match"),
    [({"nan": True}, "NaN"), ({"short": True}, "expected 2"), ({"dim": 3}, "lengths")],
)
async def test_bad_vectors_are_rejected(
    server: _Server, step: dict[str, Any], match: str
) -> None:
    server.script = [step]
    async with _embedder(server) as embedder:
        with pytest.raises(EmbeddingError, match=match):
            await embedder.embed(["alpha", "beta"])


async def test_dimension_mismatch_with_declared_dim(server: _Server) -> None:
    async with _embedder(server, dim=16) as embedder:
        with pytest.raises(EmbeddingError, match="dimension 16"):
            await embedder.embed(["alpha"])


async def test_dim_is_learned_by_warm_up(server: _Server) -> None:
    async with _embedder(server) as embedder:
        with pytest.raises(EmbeddingError, match="warm_up"):
            _ = embedder.dim
        await embedder.warm_up()
        assert embedder.dim == DIM
