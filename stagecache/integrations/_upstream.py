"""The proxy's upstream: a raw-forwarding model client for the pipeline.

The proxy must hand back what the upstream said, byte for byte where it can: its
status codes, its error bodies, every field of its completion. So the LLM stage's
client here forwards the client's own request body and keeps the upstream's reply
(or error) on the request, where the proxy finds it after the pipeline has run;
the pipeline only gets the text, usage and tool calls it needs for the cache.

The upstream's informative response headers (:func:`forwarded_headers`: request
id, rate limits, ``retry-after``, processing time) are kept too, for the proxy to
send on. The model is called at most once per request: a reply that cannot be
read (an HTML page with status 200) or a timeout is an :class:`UpstreamFailure`
the proxy answers with 502 or 504, never a second call.
"""

from __future__ import annotations

import contextvars
from typing import Any

import httpx

from stagecache._model import ToolCall, Turn, Usage
from stagecache.clients import finish_reason
from stagecache.errors import LLMError
from stagecache.exporters._propagation import inject_hook, trace_headers
from stagecache.integrations._common import json_arguments
from stagecache.stages.llm import Completion

__all__ = [
    "CURRENT",
    "ForwardingModel",
    "ProxyRequest",
    "UpstreamError",
    "UpstreamFailure",
    "failure_of",
    "forwarded_headers",
]

#: Upstream response headers that reach the client (and every ``x-ratelimit-*``).
_FORWARDED = frozenset(
    {
        "x-request-id",
        "retry-after",
        "retry-after-ms",
        "openai-processing-ms",
        "openai-version",
        "openai-organization",
        "openai-project",
    }
)


def forwarded_headers(headers: httpx.Headers) -> dict[str, str]:
    """The upstream's headers that the client should see, as the proxy sends them."""
    return {
        name: value
        for name, value in headers.items()
        if name in _FORWARDED or name.startswith("x-ratelimit-")
    }


class UpstreamError(LLMError):
    """The upstream answered with an error status (kept verbatim)."""

    def __init__(self, status: int, content: bytes, content_type: str) -> None:
        super().__init__(f"upstream answered {status}", status_code=status)
        self.status = status
        self.content = content
        self.content_type = content_type


class UpstreamFailure(LLMError):
    """No usable answer from the upstream: the proxy's own 502 or 504.

    Attributes:
        status: 504 for a timeout, 502 otherwise.
        code: ``upstream_timeout``, ``upstream_unreachable`` or
            ``bad_upstream_response``.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status_code=status)
        self.status = status
        self.code = code
        self.message = message


def failure_of(exc: httpx.HTTPError) -> UpstreamFailure:
    """The failure an httpx error stands for (a timeout is a 504)."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamFailure(
            504, "upstream_timeout", "The upstream did not answer in time."
        )
    return UpstreamFailure(
        502, "upstream_unreachable", f"Cannot reach the upstream: {exc}"
    )


class ProxyRequest:
    """One proxied request: what goes upstream and what came back.

    Attributes:
        sent: whether the request went upstream (it never goes twice).
        response: the upstream's completion (a 2xx JSON reply).
        error: the upstream's error reply (kept verbatim).
        failure: no usable reply (timeout, unreachable, unreadable).
        upstream_headers: the upstream's headers to forward (see
            :func:`forwarded_headers`).
    """

    __slots__ = (
        "body",
        "error",
        "failure",
        "headers",
        "live",
        "response",
        "sent",
        "upstream_headers",
    )

    def __init__(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        self.body = body
        self.headers = headers
        self.sent = False
        self.response: dict[str, Any] | None = None
        self.error: UpstreamError | None = None
        self.failure: UpstreamFailure | None = None
        self.upstream_headers: dict[str, str] = {}
        # [streaming] set by _proxy_stream.run_live: answer this request live.
        self.live: Any = None


CURRENT: contextvars.ContextVar[ProxyRequest | None] = contextvars.ContextVar(
    "stagecache_proxy_request", default=None
)


class ForwardingModel:
    """Forwards the proxied request to an OpenAI-compatible upstream.

    Args:
        base_url: the upstream's base, e.g. ``http://127.0.0.1:8000/v1``.
        timeout_s: per-request timeout.
        client: an httpx client to use (default: one of its own).
    """

    model_id = "upstream"
    #: ``gen_ai.provider.name`` of the model call's span (an OpenAI-compatible API).
    provider_name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
        # Every call of its own client carries the trace context (passthrough too).
        self.client = client or httpx.AsyncClient(
            timeout=timeout_s, limits=limits, event_hooks={"request": [inject_hook]}
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def post(
        self, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        """POST ``body`` to ``/chat/completions`` as it is."""
        return await self.client.post(
            self.base_url + "/chat/completions",
            json=body,
            headers=trace_headers(headers),
        )

    async def complete(self, turn: Turn) -> Completion:
        """Forward the current proxied request; keep the upstream's reply on it.

        Raises:
            UpstreamError: the upstream answered with an error status.
            UpstreamFailure: it could not be reached, timed out, or sent
                something that is not a chat completion.
        """
        request = CURRENT.get()
        if request is None:
            raise LLMError("ForwardingModel only answers requests of the proxy")
        body = {**request.body, "stream": False}
        body.pop("stream_options", None)
        if turn.memory:
            facts = "Known about the user:\n" + "\n".join(f"- {m}" for m in turn.memory)
            body["messages"] = [{"role": "system", "content": facts}, *body["messages"]]
        if request.sent:  # one upstream call per request, whatever happens
            raise LLMError("the request was already sent upstream")
        request.sent = True
        if request.live is not None:  # [streaming] a streamed miss goes out live
            from stagecache.integrations._proxy_stream_upstream import stream_completion

            return await stream_completion(self, request, turn, body)
        try:
            response = await self.post(body, request.headers)
        except httpx.HTTPError as exc:
            request.failure = failure_of(exc)
            raise request.failure from exc
        request.upstream_headers = forwarded_headers(response.headers)
        if response.status_code >= 400:
            request.error = UpstreamError(
                response.status_code,
                response.content,
                response.headers.get("content-type", "application/json"),
            )
            raise request.error
        try:
            data = response.json()
            message = data["choices"][0]["message"]
            if not isinstance(message, dict):
                raise TypeError(message)
        except (ValueError, KeyError, IndexError, TypeError):
            kind = response.headers.get("content-type", "no content type")
            request.failure = UpstreamFailure(
                502,
                "bad_upstream_response",
                f"The upstream answered {response.status_code} ({kind}) with a "
                "body that is not a chat completion.",
            )
            raise request.failure from None
        request.response = data
        calls = [
            ToolCall(
                name=str((c.get("function") or {}).get("name", "")),
                arguments=json_arguments((c.get("function") or {}).get("arguments")),
            )
            for c in message.get("tool_calls") or []
        ]
        content = message.get("content")
        usage = data.get("usage") or {}
        return Completion(
            # A tool-call reply has no storable text: it is never stored.
            text=content if isinstance(content, str) and not calls else "",
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
            tool_calls=calls,
            model=str(data.get("model", "")),
            finish_reason=finish_reason(data["choices"][0]),
            response_id=str(data["id"])[:128] if data.get("id") else None,
        )
