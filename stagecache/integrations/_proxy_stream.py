"""Live streaming of cache misses through the proxy.

A streamed request (``stream: true``) runs the pipeline in a task. When the chain
reaches the model (a miss), ``stream_completion`` (:mod:`._proxy_stream_upstream`,
the producer side; this module is the response side) sends the request upstream
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
import json
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse

from stagecache._model import Result, Turn
from stagecache.exporters._stdlog import get_logger
from stagecache.guards import PiiRedactor
from stagecache.stages.output_guard import OutputGuard

if TYPE_CHECKING:
    from stagecache.integrations._upstream import ProxyRequest
    from stagecache.pipeline import Pipeline

__all__ = ["REFUSAL", "LiveStream", "run_live"]

_log = get_logger("stagecache.proxy")

#: The refusal that ends a stream whose guard failed (the runner's refusal text).
REFUSAL = "Sorry, this request could not be processed safely."
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
