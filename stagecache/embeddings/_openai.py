"""An embedder for any server speaking OpenAI's ``POST /v1/embeddings``.

OpenAI itself, vLLM, Ollama, LM Studio, text-embeddings-inference, LiteLLM, ... It
sends texts in batches of ``batch_size``, retries 429, 5xx, connection errors and
timeouts (:mod:`stagecache._http_retry`: tenacity, exponential backoff with jitter,
at least the wait a ``retry-after-ms`` / ``Retry-After`` asks for), and checks every
reply: the row count, the dimension, NaN and inf. Rows are L2-normalised here
(OpenAI's already are; other servers' may not be).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from stagecache._http_retry import RetryPolicy
from stagecache.embeddings._validation import (
    check_texts,
    empty_vectors,
    validate_vectors,
)
from stagecache.errors import EmbeddingError
from stagecache.exporters._propagation import trace_headers
from stagecache.types import Vectors

__all__ = ["OpenAIEmbedder"]

_HINTS = {
    401: "check the API key (api_key / api_key_env)",
    403: "the API key may lack access to this model",
    404: "check base_url (it usually ends in /v1) and the model name",
    413: "lower batch_size or max_chars",
    429: "rate limited: lower concurrency, or raise max_retries",
}


class OpenAIEmbedder:
    """Embeds through an OpenAI-compatible ``/embeddings`` endpoint.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or
            ``http://localhost:8000/v1``; ``/embeddings`` is appended.
        model: the model name the server knows.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        timeout_s: timeout of one HTTP request.
        max_retries: retries after the first attempt (on 408/409/425/429/5xx,
            connection errors and timeouts).
        batch_size: the most texts per request.
        dim: the expected dimension; None to learn it from the first reply (call
            ``warm_up()`` before reading ``dim``).
        backoff_s: the first retry delay; it doubles each time (with jitter), capped
            at ``max_backoff_s``.
        max_backoff_s: the longest backoff between attempts; a server's
            ``retry-after-ms`` / ``Retry-After`` is waited for in full (up to
            ``max_retry_after_s``).
        max_retry_after_s: the longest wait a server may ask for; a reply asking
            for more is not retried (an :class:`EmbeddingError` saying so).
        max_chars: texts longer than this are clipped (logged ``truncated=True``).
        model_id: the id used in cache keys (default: ``model``).
        client: an ``httpx.AsyncClient`` to use instead of creating one (not
            closed by ``aclose()``).
    """

    __slots__ = (
        "_client",
        "_dim",
        "_model_id",
        "_owns_client",
        "api_key",
        "backoff_s",
        "batch_size",
        "max_backoff_s",
        "max_chars",
        "max_retries",
        "max_retry_after_s",
        "model",
        "timeout_s",
        "url",
    )

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        batch_size: int = 256,
        dim: int | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 60.0,
        max_chars: int = 16_000,
        model_id: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.max_chars = max_chars
        self._dim = dim
        self._model_id = model_id or model
        self._owns_client = client is None
        self._client = client
        self._policy()  # ValueError now for a negative or infinite delay

    @property
    def model_id(self) -> str:
        """The id used in cache keys."""
        return self._model_id

    @property
    def dim(self) -> int:
        """The dimension (given, or learned from the first reply).

        Raises:
            EmbeddingError: neither given nor learned yet.
        """
        if self._dim is None:
            raise EmbeddingError(
                f"{self._model_id}: dimension unknown; pass dim= or await warm_up()"
            )
        return self._dim

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = (
                {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            )
            self._client = httpx.AsyncClient(timeout=self.timeout_s, headers=headers)
        return self._client

    async def warm_up(self) -> None:
        """Learn the dimension with one short request when it is not known."""
        if self._dim is None:
            await self.embed(["dimension probe"])

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in batches of ``batch_size``.

        Returns:
            An array of shape ``(len(texts), dim)``, rows L2-normalised.

        Raises:
            InputError: for empty, whitespace-only or invalid-Unicode texts.
            EmbeddingError: an HTTP error (after retries), a timeout, or a bad reply.
        """
        items = check_texts(texts, max_chars=self.max_chars, model_id=self._model_id)
        if not items:
            return empty_vectors(self.dim)
        parts = [
            await self._request(items[i : i + self.batch_size])
            for i in range(0, len(items), self.batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    async def _request(self, texts: list[str]) -> Vectors:
        payload = {"model": self.model, "input": texts, "encoding_format": "float"}

        async def post() -> httpx.Response:
            # The trace context of each attempt: the current span when it is sent.
            return await self._http().post(
                self.url, json=payload, headers=trace_headers()
            )

        done = await self._policy().send(self.url, post)
        if done.response is None:
            exc = done.error
            if isinstance(exc, httpx.TimeoutException):
                raise EmbeddingError(
                    f"POST {self.url}: timed out after {self.timeout_s:g} s "
                    f"({done.attempts} attempts); raise timeout_s or check the server"
                ) from exc
            raise EmbeddingError(
                f"POST {self.url}: cannot connect "
                f"({type(exc).__name__}: {exc}; "
                f"{done.attempts} attempts); check base_url and that the server "
                f"is up"
            ) from exc
        if done.response.status_code == 200:
            return self._parse(done.response, len(texts))
        raise self._http_error(done.response, done.attempts, done.retry_after_s)

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            max_retry_after_s=self.max_retry_after_s,
        )

    def _http_error(
        self, response: httpx.Response, attempts: int, too_long: float | None
    ) -> EmbeddingError:
        code = response.status_code
        body = response.text[:300].replace("\n", " ")
        hint = _HINTS.get(code, "server error" if code >= 500 else "bad request")
        if too_long is not None:
            hint = (
                f"the server asked to retry after {too_long:g} s, more than "
                f"max_retry_after_s={self.max_retry_after_s:g}; lower the request "
                f"rate or raise max_retry_after_s"
            )
        return EmbeddingError(
            f"POST {self.url}: HTTP {code} after {attempts} attempt(s) "
            f"(model {self.model!r}): {body!r}; hint: {hint}"
        )

    def _parse(self, response: httpx.Response, n: int) -> Vectors:
        try:
            data: Any = response.json()
            rows = sorted(data["data"], key=lambda row: int(row.get("index", 0)))
            vectors = [row["embedding"] for row in rows]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingError(
                f"POST {self.url}: reply is not an embeddings response "
                f"({type(exc).__name__}: {exc}); is base_url an OpenAI-compatible API?"
            ) from exc
        if any(not isinstance(v, list) for v in vectors):
            raise EmbeddingError(
                f"POST {self.url}: embeddings are not float lists (base64 reply?)"
            )
        if len(vectors) != n:
            raise EmbeddingError(
                f"POST {self.url}: expected {n} embeddings (one per text), got "
                f"{len(vectors)}"
            )
        if vectors and len({len(v) for v in vectors}) != 1:
            raise EmbeddingError(f"POST {self.url}: embeddings of different lengths")
        out = validate_vectors(vectors, n, self._dim, self._model_id)
        if self._dim is None:
            self._dim = int(out.shape[1])
        return out

    async def aclose(self) -> None:
        """Close the HTTP client (unless it was passed in)."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> OpenAIEmbedder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.url!r}, model={self.model!r})"
