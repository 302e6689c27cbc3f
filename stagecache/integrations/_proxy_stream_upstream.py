"""The producer side of a live proxy stream: read the upstream's SSE, guard it.

:func:`stream_completion` is what :class:`~._upstream.ForwardingModel` does for a
streamed miss (:mod:`._proxy_stream` has the response side): it sends the request
upstream with ``stream: true``, forwards each chunk to the
:class:`~._proxy_stream.LiveStream` with its content through a
:class:`~stagecache.guards._streaming.StreamRedactor`, and returns the whole raw
answer as a :class:`~stagecache.stages.llm.Completion` (its finish reason the
upstream's last, or ``unfinished`` when the stream broke off) for the rest of the
chain. An upstream that answers a streamed request with one JSON body is read as
a plain completion (the proxy then replays it).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import httpx

from stagecache._model import GuardFinding, ToolCall, Turn, Usage
from stagecache.clients import finish_reason as finish_of
from stagecache.exporters._stdlog import get_logger
from stagecache.guards._streaming import StreamRedactor
from stagecache.integrations._common import json_arguments
from stagecache.integrations._proxy_stream import REFUSAL, LiveStream
from stagecache.stages.llm import Completion

if TYPE_CHECKING:
    from stagecache.integrations._upstream import ForwardingModel, ProxyRequest

__all__ = ["UNFINISHED", "stream_completion"]

_log = get_logger("stagecache.proxy")

#: A stream that ended without a finish reason: never stored.
UNFINISHED = "unfinished"


class _Answer:
    """What the streamed chunks add up to."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: dict[str, Any] = {}
        self.model = ""
        self.finish: str | None = None

    def add_calls(self, calls: Any) -> None:
        for call in calls if isinstance(calls, list) else []:
            if not isinstance(call, dict):
                continue
            index = call.get("index", 0)
            slot = self.calls.setdefault(
                index if isinstance(index, int) else 0, {"name": "", "arguments": ""}
            )
            function = call.get("function") or {}
            slot["name"] += str(function.get("name") or "")
            slot["arguments"] += str(function.get("arguments") or "")

    def completion(self) -> Completion:
        calls = [
            ToolCall(name=c["name"], arguments=json_arguments(c["arguments"]))
            for _, c in sorted(self.calls.items())
        ]
        return Completion(
            text="" if calls else "".join(self.text),
            usage=Usage(
                prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
                completion_tokens=int(self.usage.get("completion_tokens") or 0),
            ),
            tool_calls=calls,
            model=self.model,
            finish_reason=self.finish or UNFINISHED,
        )


async def stream_completion(
    model: ForwardingModel, request: ProxyRequest, turn: Turn, body: dict[str, Any]
) -> Completion:
    """Send ``body`` upstream streamed; forward its chunks live (guarded).

    Raises:
        UpstreamError: the upstream answered with an error status.
        UpstreamFailure: it could not be reached, timed out, or answered neither
            SSE nor a chat completion.
    """
    from stagecache.integrations._upstream import (
        UpstreamError,
        failure_of,
        forwarded_headers,
    )

    live: LiveStream = request.live
    body = {**body, "stream": True}
    if "stream_options" in request.body:
        body["stream_options"] = request.body["stream_options"]
    outgoing = model.client.build_request(
        "POST", model.base_url + "/chat/completions", json=body, headers=request.headers
    )
    try:
        response = await model.client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        request.failure = failure_of(exc)
        raise request.failure from exc
    request.upstream_headers = forwarded_headers(response.headers)
    try:
        content_type = response.headers.get("content-type", "application/json")
        if response.status_code >= 400:
            request.error = UpstreamError(
                response.status_code, await response.aread(), content_type
            )
            raise request.error
        if "text/event-stream" not in content_type:
            return await _buffered(request, response)
        return await _forward(live, turn, response)
    finally:
        await response.aclose()


async def _buffered(request: ProxyRequest, response: httpx.Response) -> Completion:
    """An upstream that answered a streamed request with one JSON body."""
    from stagecache.integrations._upstream import UpstreamFailure

    try:
        data = json.loads(await response.aread())
        choice = data["choices"][0]
        message = choice["message"]
        if not isinstance(message, dict):
            raise TypeError(message)
    except (ValueError, KeyError, IndexError, TypeError):
        kind = response.headers.get("content-type", "no content type")
        request.failure = UpstreamFailure(
            502,
            "bad_upstream_response",
            f"The upstream answered {response.status_code} ({kind}) with a body "
            "that is not a chat completion.",
        )
        raise request.failure from None
    request.response = data
    answer = _Answer()
    answer.add_calls(message.get("tool_calls"))
    content = message.get("content")
    answer.text.append(content if isinstance(content, str) else "")
    answer.usage = data.get("usage") or {}
    answer.model = str(data.get("model", ""))
    answer.finish = finish_of(choice)
    return answer.completion()


async def _forward(
    live: LiveStream, turn: Turn, response: httpx.Response
) -> Completion:
    """Forward the upstream's SSE chunks to ``live``, content through the guard."""
    guard = StreamRedactor(live.redactor) if live.redactor is not None else None
    answer = _Answer()
    base: dict[str, Any] = {}
    refused = False
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(chunk, dict):
                continue
            if not live.started.is_set():
                live.start(turn)
            base = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
            answer.model = str(chunk.get("model") or answer.model)
            if isinstance(chunk.get("usage"), dict):
                answer.usage = chunk["usage"]
            if not _relay(live, guard, answer, chunk):
                refused = True
                turn.findings.append(
                    GuardFinding("output_guard", "stream_guard_failed", "block")
                )
                turn.stop("output_guard", "stage_failed", REFUSAL)
                return Completion(text=REFUSAL, finish_reason="content_filter")
    except httpx.HTTPError as exc:  # the upstream broke off: not stored
        _log.warning("upstream stream broke off", error_type=type(exc).__name__)
        answer.finish = None
    finally:
        if live.started.is_set():
            flush = not refused and answer.finish is None
            if guard is not None and flush and guard.held:
                with contextlib.suppress(Exception):  # an error: it stays held
                    _send_text(live, base, guard.finish())
            live.end()
    return answer.completion()


def _send_text(live: LiveStream, base: dict[str, Any], text: str) -> None:
    if text:
        delta = {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        live.send({**base, "choices": [choice]})


def _relay(
    live: LiveStream,
    guard: StreamRedactor | None,
    answer: _Answer,
    chunk: dict[str, Any],
) -> bool:
    """Forward one chunk (its content guarded); False: the guard failed."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        live.send(chunk)  # the usage chunk
        return True
    choice = dict(choices[0])
    delta = dict(choice.get("delta") or {})
    content = delta.get("content")
    finish = choice.get("finish_reason")
    answer.add_calls(delta.get("tool_calls"))
    if isinstance(content, str) and content:
        answer.text.append(content)
        if guard is not None:
            try:
                delta["content"] = guard.feed(content)
            except Exception as exc:
                return _refuse(live, chunk, exc)
    if finish is not None:
        answer.finish = str(finish)
        if guard is not None and guard.held:
            base = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
            try:
                _send_text(live, base, guard.finish())
            except Exception as exc:
                return _refuse(live, chunk, exc)
    if delta.get("content") == "" and len(delta) == 1 and finish is None:
        return True  # everything held back: nothing to send yet
    choice["delta"] = delta
    live.send({**chunk, "choices": [choice, *choices[1:]]})
    return True


def _refuse(live: LiveStream, chunk: dict[str, Any], exc: Exception) -> bool:
    _log.warning("output guard failed mid-stream", error_type=type(exc).__name__)
    base = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
    choice = {
        "index": 0,
        "delta": {"content": None, "refusal": REFUSAL},
        "logprobs": None,
        "finish_reason": "content_filter",
    }
    live.send({**base, "choices": [choice]})
    return False
