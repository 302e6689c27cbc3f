"""Live ``create_stream`` for the AutoGen wrapper: a miss streams as the inner
client produces it.

``StagecacheChatCompletionClient.create_stream`` runs ``create`` in a task with a
:class:`LiveChunks` offered to it (:func:`take_live` puts it on the request).
When the chain reaches the model (a miss),
:func:`stream_inner` calls the inner client's ``create_stream`` and puts each text
chunk, passed through the output guard's detectors
(:class:`~stagecache.guards._streaming.StreamRedactor`: only what a detector could
still match is held back), on the queue the wrapper yields from. The inner
client's final ``CreateResult`` ends the model call; the turn then goes on (output
guard on the whole answer, store under the usual policy, its finish reason
included) and the wrapper yields the final result. If the detectors fail
mid-stream, the turn ends refused (nothing stored) and the final result says
``content_filter``. A hit (or a block before the model) is replayed in chunks as
before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from autogen_core.models import CreateResult, LLMMessage

from stagecache._model import GuardFinding, Turn
from stagecache.errors import LLMError
from stagecache.exporters._stdlog import get_logger
from stagecache.guards import PiiRedactor
from stagecache.guards._streaming import StreamRedactor
from stagecache.stages.llm import Completion
from stagecache.stages.output_guard import OutputGuard

if TYPE_CHECKING:
    from stagecache.pipeline import Pipeline

__all__ = ["LiveChunks", "stream_inner", "take_live"]

_log = get_logger("stagecache.autogen")

#: The refusal of a stream whose guard failed (the runner's refusal text).
REFUSAL = "Sorry, this request could not be processed safely."


# The LiveChunks of the ``create`` that ``create_stream`` runs (in its task).
_OFFERED: contextvars.ContextVar[LiveChunks | None] = contextvars.ContextVar(
    "stagecache_autogen_live", default=None
)


def take_live() -> LiveChunks | None:
    """The live channel offered to this ``create`` (once: a nested client's
    ``create`` inside it does not stream into it)."""
    live = _OFFERED.get()
    if live is not None:
        _OFFERED.set(None)
    return live


class LiveChunks:
    """Guarded text chunks on their way from the inner client to the agent.

    Args:
        pipeline: the chain (its output guard's detectors apply to the chunks).
    """

    def __init__(self, pipeline: Pipeline) -> None:
        guard = next((s for s in pipeline.stages if isinstance(s, OutputGuard)), None)
        self.redactor: PiiRedactor | None = (
            guard.redactor if guard is not None else None
        )
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.started = False

    @contextlib.contextmanager
    def offered(self) -> Iterator[None]:
        """Offer this channel to the ``create`` started (as a task) inside."""
        token = _OFFERED.set(self)
        try:
            yield
        finally:
            _OFFERED.reset(token)

    async def pieces(self, task: asyncio.Future[Any]) -> AsyncIterator[str]:
        """The chunks, until the model call ends (or the turn, if it never calls)."""
        while True:
            get = asyncio.ensure_future(self.queue.get())
            try:
                await asyncio.wait((get, task), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not get.done():
                    get.cancel()
            if get.done() and not get.cancelled():
                item = get.result()
            elif not self.queue.empty():
                item = self.queue.get_nowait()
            else:
                return  # the turn ended without (more) chunks
            if item is None:
                return
            yield item


async def stream_inner(
    request: Any,
    turn: Turn,
    messages: Sequence[LLMMessage],
    completion_of: Callable[[CreateResult], Completion],
) -> Completion:
    """Call the inner client's ``create_stream``; queue its text, guarded.

    Args:
        request: the wrapper's request (``client``, ``kwargs``, ``live``, ``result``).
        turn: the turn (refused here if the guard fails).
        messages: what to send (memory facts included).
        completion_of: turns the final ``CreateResult`` into a :class:`Completion`.

    Raises:
        LLMError: the inner stream ended without a ``CreateResult``.
    """
    live: LiveChunks = request.live
    guard = StreamRedactor(live.redactor) if live.redactor is not None else None
    result: CreateResult | None = None
    stream = request.client.create_stream(messages, **request.kwargs)
    try:
        async for item in stream:
            if isinstance(item, CreateResult):
                result = item
                continue
            if not isinstance(item, str) or not item:
                continue
            live.started = True
            try:
                out = guard.feed(item) if guard is not None else item
            except Exception as exc:
                return _refuse(turn, exc)
            if out:
                live.queue.put_nowait(out)
        if guard is not None and guard.held:
            try:
                out = guard.finish()
            except Exception as exc:
                return _refuse(turn, exc)
            live.queue.put_nowait(out)
    finally:
        live.queue.put_nowait(None)
        await stream.aclose()
    if result is None:
        raise LLMError("the inner client's create_stream ended without a CreateResult")
    request.result = result
    return completion_of(result)


def _refuse(turn: Turn, exc: Exception) -> Completion:
    _log.warning("output guard failed mid-stream", error_type=type(exc).__name__)
    turn.findings.append(GuardFinding("output_guard", "stream_guard_failed", "block"))
    turn.stop("output_guard", "stage_failed", REFUSAL)
    return Completion(text=REFUSAL, finish_reason="content_filter")
