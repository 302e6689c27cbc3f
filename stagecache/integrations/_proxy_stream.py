"""Live streaming of cache misses through the proxy.

A streamed request (``stream: true``) runs the pipeline in a task. When the chain
reaches the model (a miss), :func:`stream_completion` sends the request upstream
with ``stream: true`` and forwards each ``chat.completion.chunk`` to the client as
it arrives, its content passed through the output guard's detectors on the way
(:class:`~stagecache.guards._streaming.StreamRedactor`: only what a detector could
still match is held back). The turn goes on when the upstream has finished: the
output guard stage redacts the whole answer (the same text the client got) and
the store stage decides, under the same policy as for any answer, whether to keep
it (the upstream's last finish reason reaches it; a stream that ends without one
is ``unfinished`` and never stored). ``data: [DONE]`` is sent once the turn has
ended. If the detectors fail mid-stream, the stream stops with a refusal chunk
(``delta.refusal``, ``finish_reason: "content_filter"``) and the turn is refused,
so nothing is stored.

Anything that ends the turn before the model is called (a hit, a guard block, an
upstream error status) is answered as before by the proxy (:func:`run_live`
returns the pipeline's result or raises its error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import httpx
from starlette.responses import StreamingResponse

from stagecache._model import GuardFinding, Result, ToolCall, Turn, Usage
from stagecache.clients import finish_reason as finish_of
from stagecache.exporters._stdlog import get_logger
from stagecache.guards import PiiRedactor
from stagecache.guards._streaming import StreamRedactor
from stagecache.integrations._common import json_arguments
from stagecache.stages.llm import Completion
from stagecache.stages.output_guard import OutputGuard

if TYPE_CHECKING:
    from stagecache.integrations._upstream import ForwardingModel, ProxyRequest
    from stagecache.pipeline import Pipeline

__all__ = ["LiveStream", "run_live", "stream_completion"]

_log = get_logger("stagecache.proxy")

#: The refusal that ends a stream whose guard failed (the runner's refusal text).
REFUSAL = "Sorry, this request could not be processed safely."
#: A stream that ended without a finish reason: never stored.
UNFINISHED = "unfinished"
_DONE = b"data: [DONE]\n\n"
#: Cache reasons that mean the client's cache control skipped the lookup.
_BYPASS = frozenset({"no_cache", "no_cache_no_store"})


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class LiveStream:
    """The channel from the model call (inside the pipeline) to the response.

    Args:
        redactor: the output guard's detectors (None: no output guard).
    """

    def __init__(self, redactor: PiiRedactor | None) -> None:
        self.redactor = redactor
        self.started = asyncio.Event()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.turn: Turn | None = None

    def start(self, turn: Turn) -> None:
        """The first chunk is on its way: the response can begin."""
        self.turn = turn
        self.started.set()

    def send(self, chunk: dict[str, Any]) -> None:
        """Queue one chunk for the client."""
        if not self.started.is_set():
            raise RuntimeError("LiveStream.send before start")
        self.queue.put_nowait(_event(chunk))

    def end(self) -> None:
        """No more chunks (``[DONE]`` follows when the turn has ended)."""
        self.queue.put_nowait(None)

    def headers(self, upstream: dict[str, str]) -> dict[str, str]:
        """The upstream's forwarded headers, then ``x-stagecache`` and friends from
        the turn's cache outcome so far."""
        cache = self.turn.cache if self.turn is not None else None
        status: str = cache.status if cache is not None else "skip"
        outcome = status if status in ("miss", "error") else "skip"
        if cache is not None and cache.reason in _BYPASS:
            outcome = "bypass"
        headers: dict[str, str] = {**upstream, "x-stagecache": outcome}
        if cache is not None and cache.similarity is not None:
            headers["x-stagecache-similarity"] = f"{cache.similarity:.4f}"
        return headers

    async def body(self, task: asyncio.Future[Result]) -> AsyncIterator[bytes]:
        """The SSE body: the chunks, then (once the turn has ended) ``[DONE]``."""
        try:
            while (item := await self.queue.get()) is not None:
                yield item
            try:
                await task  # output guard and store run after the last chunk
            except Exception as exc:  # the client has its answer already
                _log.warning("streamed turn failed", error_type=type(exc).__name__)
            yield _DONE
        finally:
            if not task.done():  # the client went away: stop the upstream too
                task.cancel()


async def run_live(
    proxied: ProxyRequest,
    run: Coroutine[Any, Any, Result],
    pipeline: Pipeline,
) -> Result | StreamingResponse:
    """Run the pipeline; stream live if it reaches the model.

    Returns:
        The streaming response once the first chunk of a model answer is on its
        way, else the pipeline's result (a hit, a block).

    Raises:
        Exception: whatever the pipeline raises before any chunk was sent.
    """
    guard = next((s for s in pipeline.stages if isinstance(s, OutputGuard)), None)
    live = LiveStream(guard.redactor if guard is not None else None)
    proxied.live = live
    task: asyncio.Future[Any] = asyncio.ensure_future(run)
    started: asyncio.Future[Any] = asyncio.ensure_future(live.started.wait())
    try:
        await asyncio.wait((task, started), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        started.cancel()
    if not live.started.is_set():
        result: Result = await task
        return result
    return StreamingResponse(
        live.body(task),
        media_type="text/event-stream",
        headers=live.headers(proxied.upstream_headers),
    )


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
