"""LangChain: a semantic ``BaseCache`` and a Runnable that runs the whole chain.

::

    from langchain_core.globals import set_llm_cache
    from stagecache.integrations.langchain import StagecacheLangChainCache

    set_llm_cache(StagecacheLangChainCache(caller=stagecache.Caller(user_id="alice")))

:class:`StagecacheLangChainCache` answers LangChain's ``lookup``/``update`` (and
their async twins) with a stagecache pipeline of its own: a lookup runs the chain up
to the model (input guard, memory, cache check); on a miss the turn is *parked* at
the model stage until LangChain's ``update`` brings the model's answer, then the
output guard, store and write-invalidate run as for any other turn. So a cached
entry is keyed, guarded and traced exactly like one stored through
``pipeline.run``. The caller is fixed per cache (``caller=``) or read per call
(``caller_from=``); a cache with neither refuses to be built (unless its scope is
``shared``). ``llm_string`` (the model and its parameters) is hashed into the
model part of the key, and its parameters, where they can be read back, also go
through the request-parameter policy (docs/integrations.md), so ``n > 1`` or
``logprobs`` are not cached. ``cache_control=`` sets a cache control (LiteLLM's
spelling) for every lookup. :class:`StagecacheRunnable` passes call keyword
arguments (``stop=``, ``temperature=``, ...) to the chat model and into the key,
and takes ``cache=`` per call. The cache cannot change the answer LangChain
returns on a miss, so redactions apply to what is stored (and later served), not
to that first answer; use :class:`StagecacheRunnable` to guard every answer.

A parked turn belongs to the thread (sync) or task (async) that looked it up:
LangChain calls ``update`` from there once the model answered, and never if the
model call failed. So the next lookup of the same prompt from that thread or task
ends the abandoned turn (nothing is stored), and a parked turn never holds the
single flight of its key: a failed call never makes a later one wait.

All pipeline work runs on a private event loop thread (see ``_loop``), so the sync
and async APIs can be mixed from any thread or loop. What is stored and given back
(every generation, with its ``generation_info``, usage and metadata) is described
in :mod:`stagecache.integrations._langchain_codec`; tool calls and non-text content
are never stored.

Needs ``pip install 'stagecache[langchain]'``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from stagecache._cachecontrol import CacheControl, coerce_cache_control
from stagecache._model import Caller, Result, Turn
from stagecache.integrations._common import require_extra, resolve_caller
from stagecache.integrations._loop import LoopThread
from stagecache.pipeline import CLEANUPS, Pipeline
from stagecache.stages.llm import Completion
from stagecache.stages.store import ENTRY_METADATA

require_extra("langchain_core", "langchain")

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache  # noqa: E402

from stagecache.integrations._langchain_codec import (  # noqa: E402
    Storable,
    restore,
    storable,
)
from stagecache.integrations._langchain_convert import (  # noqa: E402
    Chat,
    check_caller,
    llm_model_id,
    llm_params,
    parse_prompt,
    safe_params,
)
from stagecache.integrations._langchain_runnable import (  # noqa: E402
    LangChainModel,
    StagecacheRunnable,
)

__all__ = [
    "LangChainModel",
    "StagecacheLangChainCache",
    "StagecacheRunnable",
    "llm_model_id",
    "llm_params",
]

_log = logging.getLogger("stagecache.integrations.langchain")


# -- the cache ------------------------------------------------------------------

Origin = tuple[str, int]
Request = tuple[tuple[Any, ...], Chat | None, bool, Caller, str, Origin]


class _Parked:
    """A lookup that missed, waiting at the model stage for ``update``.

    ``answer`` resolves to what to store, or None for nothing (the lookup was
    abandoned, or the cache closed).
    """

    __slots__ = ("abandoned", "answer", "key", "origin", "reached", "task")

    def __init__(self, key: tuple[Any, ...], origin: Origin) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.origin = origin
        self.abandoned = False
        self.reached: asyncio.Future[None] = loop.create_future()
        self.answer: asyncio.Future[Storable | None] = loop.create_future()
        self.task: asyncio.Task[Result] | None = None


_PARKED: contextvars.ContextVar[_Parked | None] = contextvars.ContextVar(
    "stagecache_langchain_parked", default=None
)


class _Relay:
    """The cache pipeline's model client: hands the turn over to ``update``."""

    model_id = "langchain"

    def __init__(self, owner: StagecacheLangChainCache) -> None:
        self._owner = owner

    async def complete(self, turn: Turn) -> Completion:
        parked = _PARKED.get()
        if parked is None:
            return Completion(text="")
        if not parked.answer.done():
            if turn.cache.status != "miss":
                return Completion(text="")  # skipped or failed: nothing to wait for
            _hand_over_cleanups(turn)
            self._owner._park(parked)
            parked.reached.set_result(None)
            try:
                await asyncio.wait_for(
                    asyncio.shield(parked.answer), self._owner.update_wait_s
                )
            except TimeoutError:
                self._owner._unpark(parked)
                return Completion(text="")  # no answer came: nothing is stored
        stored = parked.answer.result()
        if stored is None:
            return Completion(text="")
        turn.scratch[ENTRY_METADATA] = stored.metadata
        return Completion(
            text=stored.text,
            usage=stored.usage,
            model=turn.model,
            finish_reason=stored.finish_reason,
        )


def _hand_over_cleanups(turn: Turn) -> None:
    """Release what the turn holds until it ends (its single flight) now: a parked
    turn's answer may never come, and no other lookup should wait for it."""
    for cleanup in reversed(turn.scratch.pop(CLEANUPS, [])):
        cleanup()


class StagecacheLangChainCache(BaseCache):
    """A semantic LangChain cache backed by a stagecache pipeline.

    Args:
        caller: the identity every lookup runs as.
        caller_from: returns the identity of the current call (called in the
            caller's thread); wins over ``caller`` when it returns one.
        config_path: a pipeline TOML file (default: the built-in chain).
        update_wait_s: how long a missed lookup waits for its ``update``.
        cache_control: the cache control of every lookup (``no-store``,
            ``namespace``, ...).
        **pipeline_options: for ``Pipeline.default``/``stagecache.load``
            (``embedder=``, ``config=``, ``cache=``, ``tracer_provider=``).

    Raises:
        ConfigError: neither ``caller`` nor ``caller_from`` (field ``caller``), or a
            ``caller`` the scope cannot cache for (field ``caller.user_id``), unless
            the scope is ``shared``: such a cache would never store anything.
    """

    def __init__(
        self,
        caller: Caller | None = None,
        caller_from: Callable[[], Caller | None] | None = None,
        *,
        config_path: str | None = None,
        update_wait_s: float = 300.0,
        cache_control: CacheControl | Mapping[str, Any] | None = None,
        **pipeline_options: Any,
    ) -> None:
        self._cache_control = coerce_cache_control(cache_control)
        self._caller = caller
        self._caller_from = caller_from
        self.update_wait_s = update_wait_s
        relay = _Relay(self)
        if config_path is not None:
            self.pipeline = Pipeline.load(config_path, llm=relay, **pipeline_options)
        else:
            self.pipeline = Pipeline.default(llm=relay, **pipeline_options)
        check_caller(self.pipeline, caller, caller_from, type(self).__name__)
        self._loop = LoopThread("stagecache-langchain-cache")
        self._parked: dict[tuple[Any, ...], deque[_Parked]] = {}
        self._tasks: set[asyncio.Task[Result]] = set()
        self.last_result: Result | None = None

    @property
    def pending(self) -> int:
        """How many missed lookups are waiting for their ``update``."""
        return sum(len(queue) for queue in list(self._parked.values()))

    # -- LangChain's API ----------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for ``prompt``, or None on a miss."""
        return self._loop.run(self._lookup(self._request(prompt, llm_string)))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async :meth:`lookup`."""
        return await self._loop.arun(self._lookup(self._request(prompt, llm_string)))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Finish the parked turn of ``prompt`` with the model's answer."""
        self._loop.run(self._update(self._request(prompt, llm_string), return_val))

    async def aupdate(
        self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE
    ) -> None:
        """Async :meth:`update`."""
        await self._loop.arun(
            self._update(self._request(prompt, llm_string), return_val)
        )

    def clear(self, **kwargs: Any) -> None:
        """Remove every entry of every scope."""
        self._loop.run(self.pipeline.cache.clear())

    async def aclear(self, **kwargs: Any) -> None:
        """Async :meth:`clear`."""
        await self._loop.arun(self.pipeline.cache.clear())

    def close(self) -> None:
        """Close the pipeline and stop the private loop."""
        self._loop.run(self._aclose())
        self._loop.close()

    # -- on the private loop ------------------------------------------------------

    def _request(self, prompt: str, llm_string: str) -> Request:
        caller = resolve_caller(self._caller, self._caller_from)
        chat, is_chat = parse_prompt(prompt)
        model = llm_model_id(llm_string)
        key = (
            caller.user_id,
            caller.session_id,
            caller.tenant,
            model,
            prompt,
            llm_string,
        )
        return key, chat, is_chat, caller, model, _origin()

    async def _lookup(self, request: Request) -> RETURN_VAL_TYPE | None:
        key, chat, is_chat, caller, model, origin = request
        if chat is None:
            return None
        self._abandon(key, origin)  # that call failed: its update never comes
        parked = _Parked(key, origin)
        task = self._start(parked, chat, caller, model)
        waiting: list[asyncio.Future[Any]] = [task, parked.reached]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() or task.cancelled() or task.exception() is not None:
            return None  # parked at the model, or the chain failed: a miss
        result = task.result()
        if not result.cache.hit or result.blocked is not None:
            return None
        return restore(result.cache.metadata, result.answer, is_chat, _mark(result))

    async def _update(self, request: Request, return_val: RETURN_VAL_TYPE) -> None:
        key, chat, _, caller, model, origin = request
        stored = storable(return_val)
        parked = self._take(key, origin)
        if parked is not None:
            parked.answer.set_result(stored)
            if parked.task is not None:
                await asyncio.wait({parked.task})
            return
        if chat is None or stored is None:
            return
        # No lookup is waiting (update without lookup): run the turn with the answer.
        parked = _Parked(key, origin)
        parked.answer.set_result(stored)
        await asyncio.wait({self._start(parked, chat, caller, model)})

    def _start(
        self, parked: _Parked, chat: Chat, caller: Caller, model: str
    ) -> asyncio.Task[Result]:
        task = asyncio.get_running_loop().create_task(
            self._run(parked, chat, caller, model)
        )
        parked.task = task
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    async def _run(
        self, parked: _Parked, chat: Chat, caller: Caller, model: str
    ) -> Result:
        _PARKED.set(parked)  # this task's own context
        result = await self.pipeline.run(
            chat,
            caller=caller,
            model=model,
            params=safe_params(parked.key[-1]),
            cache=self._cache_control,
        )
        if not parked.abandoned:
            self.last_result = result
        return result

    async def _aclose(self) -> None:
        for queue in self._parked.values():
            for parked in queue:
                if not parked.answer.done():
                    parked.answer.set_result(None)
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.pipeline.aclose()

    def _park(self, parked: _Parked) -> None:
        self._parked.setdefault(parked.key, deque()).append(parked)

    def _unpark(self, parked: _Parked) -> None:
        queue = self._parked.get(parked.key)
        if queue is not None and parked in queue:
            queue.remove(parked)
            if not queue:
                del self._parked[parked.key]

    def _take(self, key: tuple[Any, ...], origin: Origin) -> _Parked | None:
        """The parked turn of ``key`` from ``origin``, else the oldest of ``key``
        (an ``update`` from another thread than its lookup's)."""
        queue = self._parked.get(key)
        if not queue:
            return None
        parked = next((p for p in queue if p.origin == origin), queue[0])
        self._unpark(parked)
        return parked

    def _abandon(self, key: tuple[Any, ...], origin: Origin) -> None:
        queue = self._parked.get(key)
        for parked in [p for p in queue or () if p.origin == origin]:
            self._unpark(parked)
            parked.abandoned = True
            if not parked.answer.done():
                parked.answer.set_result(None)

    def _forget(self, task: asyncio.Task[Result]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a contained failure is not "never retrieved"


def _origin() -> Origin:
    """Who is calling: the running task (async) or the thread (sync)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        return ("task", id(task))
    return ("thread", threading.get_ident())


def _mark(result: Result) -> dict[str, Any]:
    return {
        "cache": result.cache.status,
        "similarity": result.cache.similarity,
        "entry_id": result.cache.entry_id,
    }
