"""Requests the proxy does not cache: sent upstream once, answered as they came.

Used for chat requests the cache cannot key (``n > 1``, images), for requests
without an identity, for ``/v1/models`` and for every other OpenAI endpoint
(``/v1/responses``, ``/v1/completions``, ``/v1/files``...). The reply keeps the
upstream's status, content type, body (streamed as it arrives when it is a
stream) and informative headers (:func:`._upstream.forwarded_headers`), plus
``x-stagecache``. A timeout is a 504 and an unreachable upstream a 502, both in
OpenAI's error shape with ``x-stagecache: error``.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from stagecache.integrations._proxy_errors import BodyError, error_response, read_body
from stagecache.integrations._upstream import failure_of, forwarded_headers

__all__ = ["CLIENT_HEADERS", "forward", "forward_request"]

#: Request headers of the client that go upstream with a passed-through request
#: (besides the credential, which ``upstream_headers`` decides).
CLIENT_HEADERS = (
    "content-type",
    "accept",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "idempotency-key",
)


async def forward(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    outcome: str,
    json_body: dict[str, Any] | None = None,
    content: bytes | None = None,
    params: str = "",
    api_reply: bool = False,
) -> Response:
    """Send one request upstream and answer with its reply.

    Args:
        client: the upstream connection pool.
        method: the HTTP method.
        url: the upstream URL.
        headers: what to send (credential, content type...).
        outcome: the ``x-stagecache`` value of a reply.
        json_body: a JSON body (the chat passthrough).
        content: a raw body (other endpoints).
        params: the client's query string.
        api_reply: a success must be JSON or an event stream (chat); anything
            else (an HTML page with status 200) is a 502.
    """
    outgoing = client.build_request(
        method,
        url + (f"?{params}" if params else ""),
        json=json_body,
        content=content,
        headers=headers,
    )
    try:
        response = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        failure = failure_of(exc)
        return error_response(
            failure.status,
            failure.message,
            code=failure.code,
            headers={"x-stagecache": "error"},
        )
    reply_headers = {**forwarded_headers(response.headers), "x-stagecache": outcome}
    media_type = response.headers.get("content-type")
    if (
        api_reply
        and response.is_success
        and not any(kind in (media_type or "") for kind in ("json", "event-stream"))
    ):
        await response.aclose()
        return error_response(
            502,
            f"The upstream answered {response.status_code} ({media_type}) with a "
            "body that is not an API reply.",
            code="bad_upstream_response",
            headers={**reply_headers, "x-stagecache": "error"},
        )
    if "text/event-stream" in (media_type or ""):
        return StreamingResponse(
            response.aiter_bytes(),
            status_code=response.status_code,
            media_type=media_type,
            headers=reply_headers,
            background=BackgroundTask(response.aclose),
        )
    try:
        body = await response.aread()
    except httpx.HTTPError as exc:
        failure = failure_of(exc)
        return error_response(
            failure.status,
            failure.message,
            code=failure.code,
            headers={**reply_headers, "x-stagecache": "error"},
        )
    finally:
        await response.aclose()
    return Response(
        body,
        status_code=response.status_code,
        media_type=media_type,
        headers=reply_headers,
    )


async def forward_request(
    client: httpx.AsyncClient,
    base_url: str,
    request: Request,
    *,
    credential: dict[str, str],
    max_body_bytes: int,
) -> Response:
    """Pass a client's ``/v1/...`` request on as it is (body, query, stream).

    Args:
        client: the upstream connection pool.
        base_url: the upstream's base (``.../v1``).
        request: the client's request.
        credential: what authenticates it upstream (the proxy's ``upstream_headers``).
        max_body_bytes: larger bodies get 413.
    """
    try:
        raw = await read_body(request, max_body_bytes)
    except BodyError as exc:
        return exc.response
    headers = {
        name: request.headers[name]
        for name in CLIENT_HEADERS
        if name in request.headers
    }
    return await forward(
        client,
        request.method,
        base_url + request.url.path.removeprefix("/v1"),
        content=raw or None,
        headers={**headers, **credential},
        outcome="skip",
        params=request.url.query,
    )
