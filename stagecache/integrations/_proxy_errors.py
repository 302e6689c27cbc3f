"""What the proxy itself answers when it refuses or fails: OpenAI's error shape.

Every error the proxy produces (not one the upstream sent, which comes back
verbatim) is ``{"error": {"message", "type", "param", "code"}}`` with the status an
OpenAI client expects: 400 for a body that is not acceptable JSON, 401 for a
missing or wrong key, 404 for an unknown route or model, 405 for a wrong method,
413 for an oversize body, 502 when the upstream cannot be reached or answers
something that is not what it should, 504 when it does not answer in time.

Request bodies are checked here before anything goes upstream: valid UTF-8 JSON,
an object, no ``NaN``/``Infinity`` (not JSON, and nothing upstream would accept),
no lone surrogate in any string (it cannot be encoded to send on), and nesting
no deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stagecache.integrations._openai_shapes import error_body

__all__ = [
    "MAX_DEPTH",
    "BodyError",
    "error_response",
    "http_exception_handler",
    "parse_json",
    "read_body",
    "server_error_handler",
]

#: Deeper JSON bodies are refused (a chat request nests about 6 levels).
MAX_DEPTH = 64

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


def error_response(
    status: int,
    message: str,
    type_: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error response (``type`` follows the status by default)."""
    kind = type_ or _TYPES.get(status, "api_error")
    return JSONResponse(
        error_body(message, kind, param=param, code=code),
        status_code=status,
        headers=headers,
    )


class BodyError(Exception):
    """A request body the proxy refuses, with its response."""

    def __init__(self, response: JSONResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _refuse(
    message: str,
    code: str = "invalid_body",
    status: int = 400,
    *,
    param: str | None = None,
) -> NoReturn:
    raise BodyError(error_response(status, message, code=code, param=param))


class _NonFinite:
    """Where the parser met ``NaN``/``Infinity``: refused once its field is known."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _constant(name: str) -> _NonFinite:
    return _NonFinite(name)


def _check(body: dict[str, Any]) -> None:
    """Refuse nesting deeper than MAX_DEPTH, strings with lone surrogates and
    ``NaN``/``Infinity`` (named by the top-level field they sit in), in one walk."""
    stack: list[tuple[Any, int, str | None]] = [(body, 1, None)]
    while stack:
        item, depth, field = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if isinstance(item, _NonFinite):
            _refuse(
                f"{field}: {item.name} is not a JSON number; send a finite number.",
                code="invalid_number",
                param=field,
            )
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            _refuse(
                f"The request body nests deeper than {MAX_DEPTH} levels.",
                code="too_deep",
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1, field or key))
        else:
            stack.extend((child, depth + 1, field) for child in item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(
            "The request body contains a lone surrogate (an unpaired \\ud800-"
            "\\udfff escape), which is no text; send valid Unicode.",
            code="invalid_unicode",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes.

    Raises:
        BodyError: 413 for a larger body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        _refuse(f"The request body exceeds {limit} bytes.", "body_too_large", 413)
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > limit:
            _refuse(f"The request body exceeds {limit} bytes.", "body_too_large", 413)
    return bytes(raw)


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object that can be sent on.

    Raises:
        BodyError: 400 for anything else (see the module docstring).
    """
    try:
        body = json.loads(raw, parse_constant=_constant)
    except RecursionError:
        _refuse(
            f"The request body nests deeper than {MAX_DEPTH} levels.", code="too_deep"
        )
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        _refuse("The request body is not valid JSON.", code="invalid_json")
    if not isinstance(body, dict):
        _refuse("The request body must be a JSON object.", code="invalid_json")
    _check(body)
    return body


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 (unknown route, wrong method) in OpenAI's shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}."
        return error_response(404, message, code="unknown_url")
    if status == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        return error_response(405, message, code="method_not_allowed", headers=headers)
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return error_response(status, str(detail))


async def server_error_handler(request: Request, exc: Exception) -> Response:
    """An unexpected failure: a 500 in OpenAI's shape (the traceback is logged)."""
    return error_response(
        500, "The proxy failed to answer the request.", "server_error"
    )
