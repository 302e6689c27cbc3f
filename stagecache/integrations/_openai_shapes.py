"""OpenAI's wire shapes: error bodies, completions made from an answer, SSE chunks.

A cached answer must look like what the upstream would have sent: the same
``chat.completion`` object, and when streamed the same ``chat.completion.chunk``
sequence (role first, content pieces, the finish reason, an optional usage chunk,
then ``data: [DONE]``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

__all__ = ["chunks_of", "completion", "error_body", "sse"]


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def completion(
    answer: str,
    model: str,
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    refusal: bool = False,
) -> dict[str, Any]:
    """A ``chat.completion`` object for ``answer`` (a hit, or a guard's refusal).

    With ``refusal``, ``answer`` goes in ``message.refusal`` and ``content`` is
    null, as OpenAI sends a refusal.
    """
    message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
    if refusal:
        message.update(content=None, refusal=answer)
    return {
        "id": f"chatcmpl-sc{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
    }


def chunks_of(
    body: dict[str, Any], *, chunk_chars: int = 24, include_usage: bool = False
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` sequence that streams ``body``."""
    base = {
        "id": body.get("id") or f"chatcmpl-sc{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": body.get("created") or int(time.time()),
        "model": body.get("model", ""),
        "system_fingerprint": body.get("system_fingerprint"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {
            **base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }
        if include_usage:
            out["usage"] = None
        return out

    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    refusal = message.get("refusal")
    field = "refusal" if isinstance(refusal, str) and refusal else "content"
    yield chunk({"role": "assistant", "content": "", "refusal": None})
    text: str = refusal if isinstance(refusal, str) and refusal else ""
    if field == "content":
        text = message.get("content") or ""
    step = max(1, chunk_chars)
    for start in range(0, len(text), step):
        yield chunk({field: text[start : start + step]})
    for i, call in enumerate(message.get("tool_calls") or []):
        yield chunk({"tool_calls": [{"index": i, **call}]})
    yield chunk({}, choice.get("finish_reason") or "stop")
    if include_usage:
        yield {**base, "choices": [], "usage": body.get("usage")}


def sse(chunks: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """Server-sent events for ``chunks``, ending with ``data: [DONE]``."""
    for item in chunks:
        yield b"data: " + json.dumps(item, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
