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
(``caller_from=``); ``llm_string`` (the model and its parameters) is hashed into the
model part of the key, and its parameters, where they can be read back, also go
through the request-parameter policy (docs/integrations.md), so ``n > 1`` or
``logprobs`` are not cached. ``cache_control=`` sets a cache control (LiteLLM's
spelling) for every lookup. :class:`StagecacheRunnable` passes call keyword
arguments (``stop=``, ``temperature=``, ...) to the chat model and into the key,
and takes ``cache=`` per call. The cache cannot change the answer LangChain returns on a
miss, so redactions apply to what is stored (and later served), not to that first
answer; use :class:`StagecacheRunnable` to guard every answer.

All pipeline work runs on a private event loop thread (see ``_loop``), so the sync
and async APIs can be mixed from any thread or loop. Generations with tool calls,
several generations, or non-text content are never stored.

Needs ``pip install 'stagecache[langchain]'``.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import hashlib
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stagecache._cachecontrol import CacheControl
from stagecache._model import Caller, Result, ToolCall, Turn
from stagecache.guards._storable import unfinished
from stagecache.integrations._common import (
    json_arguments,
    keyed_order,
    reorder,
    require_extra,
    resolve_caller,
)
from stagecache.integrations._loop import LoopThread
from stagecache.pipeline import Pipeline
from stagecache.stages.llm import Completion

require_extra("langchain_core", "langchain")

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import (  # noqa: E402
    AIMessage,
    BaseMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.outputs import ChatGeneration, Generation  # noqa: E402
from langchain_core.prompt_values import PromptValue  # noqa: E402
from langchain_core.runnables import Runnable, RunnableConfig  # noqa: E402

__all__ = ["LangChainModel", "StagecacheLangChainCache", "StagecacheRunnable"]

Chat = list[dict[str, str]]
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
_LC_ROLES = {"user": "human", "assistant": "ai"}


def llm_model_id(llm_string: str) -> str:
    """The model part of the key for a LangChain ``llm_string``."""
    return "lc-" + hashlib.sha256(llm_string.encode()).hexdigest()[:16]


def llm_params(llm_string: str) -> dict[str, Any]:
    """The invocation parameters in a LangChain ``llm_string``, where readable.

    LangChain writes them as ``str(sorted(params.items()))`` (after ``---`` for a
    serialisable model). Values that are not Python literals make them unreadable:
    then {} (the whole ``llm_string`` is still hashed into the key).
    """
    tail = llm_string.rpartition("---")[2]
    try:
        items = ast.literal_eval(tail)
        params = dict(items)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return {}
    return {k: v for k, v in params.items() if isinstance(k, str)}


# -- the cache ------------------------------------------------------------------


class _Parked:
    """A lookup that missed, waiting at the model stage for ``update``."""

    __slots__ = ("answer", "key", "reached", "task")

    def __init__(self, key: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        self.key = key
        self.reached: asyncio.Future[None] = loop.create_future()
        self.answer: asyncio.Future[str] = loop.create_future()
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
        self._owner._park(parked)
        parked.reached.set_result(None)
        try:
            text = await asyncio.wait_for(parked.answer, self._owner.update_wait_s)
        except TimeoutError:
            self._owner._unpark(parked)
            text = ""  # no answer came: nothing is stored
        return Completion(text=text, model=turn.model)


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
        from stagecache._cachecontrol import coerce_cache_control

        self._cache_control = coerce_cache_control(cache_control)
        self._caller = caller
        self._caller_from = caller_from
        self.update_wait_s = update_wait_s
        relay = _Relay(self)
        if config_path is not None:
            self.pipeline = Pipeline.load(config_path, llm=relay, **pipeline_options)
        else:
            self.pipeline = Pipeline.default(llm=relay, **pipeline_options)
        self._loop = LoopThread("stagecache-langchain-cache")
        self._parked: dict[tuple[Any, ...], deque[_Parked]] = {}
        self._tasks: set[asyncio.Task[Result]] = set()
        self.last_result: Result | None = None

    # -- LangChain's API ----------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The cached generations for ``prompt``, or None on a miss."""
        return self._loop.run(self._lookup(*self._request(prompt, llm_string)))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Async :meth:`lookup`."""
        return await self._loop.arun(self._lookup(*self._request(prompt, llm_string)))

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

    def _request(
        self, prompt: str, llm_string: str
    ) -> tuple[tuple[Any, ...], Chat | None, bool, Caller, str]:
        caller = resolve_caller(self._caller, self._caller_from)
        chat, is_chat = _parse_prompt(prompt)
        model = llm_model_id(llm_string)
        key = (
            caller.user_id,
            caller.session_id,
            caller.tenant,
            model,
            prompt,
            llm_string,
        )
        return key, chat, is_chat, caller, model

    async def _lookup(
        self,
        key: tuple[Any, ...],
        chat: Chat | None,
        is_chat: bool,
        caller: Caller,
        model: str,
    ) -> RETURN_VAL_TYPE | None:
        if chat is None:
            return None
        parked = _Parked(key)
        task = asyncio.get_running_loop().create_task(
            self._run(parked, chat, caller, model)
        )
        parked.task = task
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        waiting: list[asyncio.Future[Any]] = [task, parked.reached]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() or task.cancelled() or task.exception() is not None:
            return None  # parked at the model, or the chain failed: a miss
        result = task.result()
        if not result.cache.hit or result.blocked is not None:
            return None
        return _generations(result.answer, is_chat)

    async def _update(
        self,
        request: tuple[tuple[Any, ...], Chat | None, bool, Caller, str],
        return_val: RETURN_VAL_TYPE,
    ) -> None:
        key = request[0]
        parked = self._take(key)
        if parked is None:
            if await self._lookup(*request) is not None:
                return  # already cached
            parked = self._take(key)
            if parked is None:
                return
        parked.answer.set_result(_storable_text(return_val))
        if parked.task is not None:
            await asyncio.wait({parked.task})

    async def _run(
        self, parked: _Parked, chat: Chat, caller: Caller, model: str
    ) -> Result:
        _PARKED.set(parked)  # this task's own context
        result = await self.pipeline.run(
            chat,
            caller=caller,
            model=model,
            params=_safe_params(parked.key[-1]),
            cache=self._cache_control,
        )
        self.last_result = result
        return result

    async def _aclose(self) -> None:
        for queue in self._parked.values():
            for parked in queue:
                if not parked.answer.done():
                    parked.answer.set_result("")
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

    def _take(self, key: tuple[Any, ...]) -> _Parked | None:
        queue = self._parked.get(key)
        if not queue:
            return None
        parked = queue.popleft()
        if not queue:
            del self._parked[key]
        return parked

    def _forget(self, task: asyncio.Task[Result]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a contained failure is not "never retrieved"


# -- the runnable ---------------------------------------------------------------


class _Call:
    __slots__ = ("config", "kwargs", "messages", "model", "result")

    def __init__(
        self,
        model: BaseChatModel,
        messages: list[BaseMessage],
        config: RunnableConfig | None,
        kwargs: dict[str, Any],
    ) -> None:
        self.model = model
        self.messages = messages
        self.config = config
        self.kwargs = kwargs
        self.result: BaseMessage | None = None


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "stagecache_langchain_call", default=None
)


class LangChainModel:
    """The pipeline's model client for a LangChain chat model.

    Inside :class:`StagecacheRunnable` it calls the runnable's chat model with the
    original messages; called directly it converts the turn.

    Args:
        chat_model: the model used outside a runnable call.
        model_id: the id reported to the pipeline.
    """

    def __init__(
        self, chat_model: BaseChatModel | None = None, *, model_id: str = "langchain"
    ) -> None:
        self._model = chat_model
        self.model_id = model_id

    async def complete(self, turn: Turn) -> Completion:
        """Ask the chat model; its tool calls become :class:`ToolCall` s."""
        call = _CALL.get()
        if call is not None:
            model, messages, config = call.model, call.messages, call.config
            kwargs = call.kwargs
        elif self._model is not None:
            messages = convert_to_messages(
                [(_LC_ROLES.get(m.role, m.role), m.content) for m in turn.messages]
            )
            model, config, kwargs = self._model, None, dict(turn.params)
        else:
            from stagecache.errors import LLMError

            raise LLMError("LangChainModel has no chat model to call")
        reply = await model.ainvoke(
            _with_memory(messages, turn.memory), config, **kwargs
        )
        if call is not None:
            call.result = reply
        tool_calls = [
            ToolCall(name=str(c["name"]), arguments=json_arguments(c.get("args")))
            for c in getattr(reply, "tool_calls", None) or []
        ]
        text = reply.content if isinstance(reply.content, str) else ""
        # A tool-call reply has no storable text: it is never stored.
        return Completion(
            text="" if tool_calls else text,
            tool_calls=tool_calls,
            finish_reason=_finish_reason(getattr(reply, "response_metadata", None)),
        )


class StagecacheRunnable(Runnable[Any, BaseMessage]):
    """A Runnable that runs the whole stagecache chain around a chat model.

    Input: what a chat model takes (a string, messages, a prompt value). Output:
    the model's message with the post-guard answer, or a cached ``AIMessage``;
    ``response_metadata["stagecache"]`` tells which.

    Args:
        chat_model: the LangChain chat model that answers misses.
        pipeline: the chain (its model client should be a :class:`LangChainModel`);
            default: ``Pipeline.default`` around ``chat_model``.
        caller: the identity every call runs as.
        caller_from: returns the identity of the current call.
        model: the model id in cache keys (default: from the chat model).
        cache_control: the cache control of every call (a per-call ``cache=``
            keyword wins).
        **pipeline_options: for ``Pipeline.default`` when ``pipeline`` is None.

    Call keyword arguments (``stop=``, ``temperature=``, ...) reach the chat model
    and are part of the key as request parameters; ``cache=`` is a per-call cache
    control (``{"no-cache": True}``), not passed on.
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        pipeline: Pipeline | None = None,
        caller: Caller | None = None,
        caller_from: Callable[[], Caller | None] | None = None,
        *,
        model: str | None = None,
        cache_control: CacheControl | Mapping[str, Any] | None = None,
        **pipeline_options: Any,
    ) -> None:
        self.chat_model = chat_model
        self._cache_control = cache_control
        self.model_id = model or llm_model_id(chat_model._get_llm_string())
        self.pipeline = pipeline or Pipeline.default(
            llm=LangChainModel(chat_model, model_id=self.model_id), **pipeline_options
        )
        self._caller = caller
        self._caller_from = caller_from
        self._loop = LoopThread("stagecache-langchain-runnable")
        self.last_result: Result | None = None

    def invoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Run the chain (blocking)."""
        caller = resolve_caller(self._caller, self._caller_from)
        return self._loop.run(self._ainvoke(input, config, caller, kwargs))

    async def ainvoke(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Run the chain."""
        caller = resolve_caller(self._caller, self._caller_from)
        return await self._loop.arun(self._ainvoke(input, config, caller, kwargs))

    def close(self) -> None:
        """Close the pipeline and stop the private loop."""
        self._loop.run(self.pipeline.aclose())
        self._loop.close()

    async def _ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None,
        caller: Caller,
        kwargs: dict[str, Any],
    ) -> BaseMessage:
        control = kwargs.pop("cache", self._cache_control)
        messages = _messages_of(input)
        chat = _chat_of(messages)
        if chat is None:
            return await self.chat_model.ainvoke(messages, config, **kwargs)
        call = _Call(self.chat_model, messages, config, kwargs)
        token = _CALL.set(call)
        try:
            result = await self.pipeline.run(
                chat,
                caller=caller,
                model=self.model_id,
                params=kwargs,
                cache=control,
            )
        finally:
            _CALL.reset(token)
        self.last_result = result
        meta = {
            "cache": result.cache.status,
            "similarity": result.cache.similarity,
            "entry_id": result.cache.entry_id,
        }
        raw = call.result
        if result.cache.hit or raw is None or result.blocked is not None:
            return AIMessage(
                content=result.answer, response_metadata={"stagecache": meta}
            )
        if isinstance(raw.content, str) and not getattr(raw, "tool_calls", None):
            metadata = {**raw.response_metadata, "stagecache": meta}
            return raw.model_copy(
                update={"content": result.answer, "response_metadata": metadata}
            )
        return raw


# -- conversions ----------------------------------------------------------------


def _messages_of(value: Any) -> list[BaseMessage]:
    if isinstance(value, str):
        return convert_to_messages([("human", value)])
    if isinstance(value, PromptValue):
        return value.to_messages()
    return convert_to_messages(value)


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            return None  # an image or other media: not keyable by text
    return "\n".join(parts)


def _keyed(pairs: Sequence[tuple[str, str]]) -> Chat | None:
    roles = [role for role, _ in pairs]
    if "user" not in roles:
        return None
    chat = [{"role": role, "content": text} for role, text in pairs]
    return reorder(chat, keyed_order(roles))


def _chat_of(messages: Sequence[BaseMessage]) -> Chat | None:
    pairs: list[tuple[str, str]] = []
    for message in messages:
        role = _ROLES.get(message.type, getattr(message, "role", None))
        text = _text(message.content)
        if role not in ("user", "assistant", "system", "tool") or text is None:
            return None
        calls = getattr(message, "tool_calls", None)
        if calls:
            text += " [tool calls] " + json.dumps(calls, sort_keys=True, default=str)
        pairs.append((str(role), text))
    return _keyed(pairs)


def _parse_prompt(prompt: str) -> tuple[Chat | None, bool]:
    """LangChain's cache prompt: serialised chat messages, or an LLM's raw text."""
    try:
        data = json.loads(prompt)
    except ValueError:
        data = None
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and isinstance(item.get("kwargs"), dict) for item in data
    ):
        return [{"role": "user", "content": prompt}], False
    pairs: list[tuple[str, str]] = []
    for item in data:
        kwargs = item["kwargs"]
        kind = str(kwargs.get("type", ""))
        role = _ROLES.get(kind, kwargs.get("role") if kind == "chat" else None)
        text = _text(kwargs.get("content", ""))
        if role is None or text is None:
            return None, True
        if kwargs.get("tool_calls"):
            text += " [tool calls] " + json.dumps(
                kwargs["tool_calls"], sort_keys=True, default=str
            )
        pairs.append((str(role), text))
    return _keyed(pairs), True


def _generations(answer: str, is_chat: bool) -> list[Generation]:
    if is_chat:
        return [ChatGeneration(message=AIMessage(content=answer))]
    return [Generation(text=answer)]


def _storable_text(return_val: RETURN_VAL_TYPE) -> str:
    """The text to store for LangChain's generations ("" stores nothing)."""
    if len(return_val) != 1:
        return ""
    generation = return_val[0]
    metadata = getattr(getattr(generation, "message", None), "response_metadata", None)
    if unfinished(_finish_reason(generation.generation_info, metadata)):
        return ""  # cut by the token limit or a filter: not stored
    if isinstance(generation, ChatGeneration):
        message = generation.message
        if getattr(message, "tool_calls", None) or not isinstance(message.content, str):
            return ""
        return message.content
    return generation.text


def _safe_params(llm_string: str) -> dict[str, Any]:
    """The ``llm_string`` parameters to hand to the pipeline: only when the policy
    does not cache them (``n > 1``, ``logprobs``), else none.

    The whole ``llm_string`` is in the key already (the model id), so the
    parameters only need to say when a request is not cacheable; passing them
    otherwise would change the key of every entry stored before. A value the
    policy rejects never fails a lookup.
    """
    from stagecache._request_params import request_params
    from stagecache.errors import InputError

    params = llm_params(llm_string)
    try:
        uncacheable = request_params(params).uncacheable
    except InputError:
        return {}
    return params if uncacheable else {}


def _finish_reason(*sources: object) -> str | None:
    """The finish reason in LangChain metadata: ``finish_reason`` (OpenAI, Gemini),
    ``stop_reason`` (Anthropic) or ``done_reason`` (Ollama); None when absent."""
    for source in sources:
        if isinstance(source, dict):
            for key in ("finish_reason", "stop_reason", "done_reason"):
                value = source.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


def _with_memory(
    messages: list[BaseMessage], memory: Sequence[str]
) -> list[BaseMessage]:
    if not memory:
        return messages
    facts = "Known about the user:\n" + "\n".join(f"- {m}" for m in memory)
    first = messages[0] if messages else None
    if isinstance(first, SystemMessage) and isinstance(first.content, str):
        return [SystemMessage(content=f"{first.content}\n\n{facts}"), *messages[1:]]
    return [SystemMessage(content=facts), *messages]
