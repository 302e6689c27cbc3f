"""W3C trace context across HTTP hops: extracted from requests, injected into calls.

The library's spans start in the current OpenTelemetry context, so a host that
runs the pipeline inside its own span gets stagecache's spans as its children.
Across processes the context travels in ``traceparent``, ``tracestate`` and
``baggage`` headers (the globally configured propagator, by default W3C trace
context and baggage):

- :class:`TraceContextMiddleware` (the proxy) makes an incoming request's context
  current for the handler, so the request's spans join the caller's trace;
- :func:`trace_headers` / :func:`inject_hook` add the current context to an
  outgoing call (the proxy's upstream, the OpenAI chat client, the OpenAI
  embedder), so the upstream's spans join it too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate

__all__ = ["TraceContextMiddleware", "inject_hook", "trace_headers"]

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


def trace_headers(headers: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` (copied) plus the current context's propagation headers."""
    out = dict(headers or {})
    propagate.inject(out)
    return out


async def inject_hook(request: httpx.Request) -> None:
    """An httpx ``request`` event hook adding the current context's headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for key, value in carrier.items():
        request.headers[key] = value


def _carrier(scope: _Scope) -> dict[str, str]:
    """The propagation headers of an ASGI request (latin-1, last one wins)."""
    wanted = {name.lower() for name in propagate.get_global_textmap().fields}
    out: dict[str, str] = {}
    for raw_key, raw_value in scope.get("headers") or ():
        key = raw_key.decode("latin-1").lower()
        if key in wanted:
            out[key] = raw_value.decode("latin-1")
    return out


class TraceContextMiddleware:
    """ASGI middleware: the incoming ``traceparent``/``tracestate``/``baggage``
    become the current context of the request's handler.

    A malformed header is ignored by the propagator (a new trace starts).

    Args:
        app: the ASGI app to wrap.
    """

    def __init__(self, app: _App) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        carrier = _carrier(scope)
        if not carrier:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(propagate.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
