"""The LangChain Runnable that runs the whole stagecache chain around a chat model.

Imported through :mod:`stagecache.integrations.langchain`. On a miss the chat model
answers with the original messages; its reply is stored whole (the text the guards
saw, plus usage and metadata: see ``_langchain_codec``) and a hit gives back that
message with the cached text, LangChain's hit convention (``usage_metadata`` kept,
``total_cost`` 0) and ``response_metadata["stagecache"]``.

``bind_tools`` returns a runnable around ``chat_model.bind_tools(...)`` that shares
the pipeline: the tools' schemas (and ``tool_choice``) become part of the model id
in the key, their names part of the context fingerprint, and tools not listed in
``read_only_tools`` count as writing (a call evicts the caller's scope). A reply
that calls tools is never stored.
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool

from stagecache._cachecontrol import CacheControl
from stagecache._model import Caller, Result, ToolCall, ToolSpec, Turn
from stagecache.integrations._common import json_arguments, resolve_caller
from stagecache.integrations._langchain_codec import (
    finish_reason,
    message_entry,
    restore_message,
    usage_of,
)
from stagecache.integrations._langchain_convert import (
    LC_ROLES,
    chat_of,
    check_caller,
    llm_model_id,
    messages_of,
    with_memory,
)
from stagecache.integrations._loop import LoopThread
from stagecache.pipeline import Pipeline
from stagecache.stages.llm import Completion
from stagecache.stages.store import ENTRY_METADATA

__all__ = ["LangChainModel", "StagecacheRunnable"]


class _Call:
    __slots__ = ("config", "kwargs", "messages", "model", "result")

    def __init__(
        self,
        model: Runnable[Any, BaseMessage],
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
        model: Runnable[Any, BaseMessage]
        if call is not None:
            model, messages, config = call.model, call.messages, call.config
            kwargs = call.kwargs
        elif self._model is not None:
            messages = convert_to_messages(
                [(LC_ROLES.get(m.role, m.role), m.content) for m in turn.messages]
            )
            model, config, kwargs = self._model, None, dict(turn.params)
        else:
            from stagecache.errors import LLMError

            raise LLMError("LangChainModel has no chat model to call")
        reply = await model.ainvoke(
            with_memory(messages, turn.memory), config, **kwargs
        )
        if call is not None:
            call.result = reply
        tool_calls = [
            ToolCall(name=str(c["name"]), arguments=json_arguments(c.get("args")))
            for c in getattr(reply, "tool_calls", None) or []
        ]
        text = reply.content if isinstance(reply.content, str) else ""
        entry = message_entry(reply)
        if entry is not None:
            turn.scratch[ENTRY_METADATA] = entry.metadata
        # A tool-call reply has no storable text: it is never stored.
        return Completion(
            text="" if tool_calls else text,
            usage=usage_of(reply),
            tool_calls=tool_calls,
            finish_reason=finish_reason(getattr(reply, "response_metadata", None)),
        )


class StagecacheRunnable(Runnable[Any, BaseMessage]):
    """A Runnable that runs the whole stagecache chain around a chat model.

    Input: what a chat model takes (a string, messages, a prompt value). Output:
    the model's message with the post-guard answer, or the cached message;
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

    Raises:
        ConfigError: no ``caller`` nor ``caller_from`` under a non-shared scope
            (see :class:`StagecacheLangChainCache`).
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
        self._cache_control = cache_control
        self.base_model = chat_model
        self.chat_model: Runnable[Any, BaseMessage] = chat_model
        self.model_id = model or llm_model_id(chat_model._get_llm_string())
        self.pipeline = pipeline or Pipeline.default(
            llm=LangChainModel(chat_model, model_id=self.model_id), **pipeline_options
        )
        check_caller(self.pipeline, caller, caller_from, "StagecacheRunnable")
        self._caller = caller
        self._caller_from = caller_from
        self._base_id = self.model_id
        self._tools: list[ToolSpec] = []
        self._loop = LoopThread("stagecache-langchain-runnable")
        self.last_result: Result | None = None

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        read_only_tools: Collection[str] = (),
        **kwargs: Any,
    ) -> StagecacheRunnable:
        """A runnable around ``chat_model.bind_tools(tools, **kwargs)``.

        It shares this runnable's pipeline and loop (closing either closes both).
        Binding again replaces the tools, as in LangChain.

        Args:
            tools: what the chat model's ``bind_tools`` takes.
            read_only_tools: names of tools that change nothing; a call of any
                other tool evicts the caller's scope.
            **kwargs: for the chat model's ``bind_tools`` (``tool_choice=``, ...).
        """
        schemas = [_schema(t) for t in tools]
        read_only = frozenset(read_only_tools)
        digest = json.dumps([schemas, kwargs], sort_keys=True, default=repr)
        clone = copy.copy(self)
        clone.chat_model = self.base_model.bind_tools(tools, **kwargs)
        clone.model_id = (
            f"{self._base_id}+tools-{hashlib.sha256(digest.encode()).hexdigest()[:16]}"
        )
        clone._tools = [_spec(schema, i, read_only) for i, schema in enumerate(schemas)]
        clone.last_result = None
        return clone

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
        messages = messages_of(input)
        chat = chat_of(messages)
        if chat is None:
            return await self.chat_model.ainvoke(messages, config, **kwargs)
        call = _Call(self.chat_model, messages, config, kwargs)
        token = _CALL.set(call)
        try:
            result = await self.pipeline.run(
                chat,
                caller=caller,
                model=self.model_id,
                tools=self._tools,
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
        if result.cache.hit and result.blocked is None:
            stored = restore_message(result.cache.metadata)
            return _hit(stored, result.answer, meta)
        if raw is None or result.blocked is not None:
            return AIMessage(
                content=result.answer, response_metadata={"stagecache": meta}
            )
        if isinstance(raw.content, str) and not getattr(raw, "tool_calls", None):
            metadata = {**raw.response_metadata, "stagecache": meta}
            return raw.model_copy(
                update={"content": result.answer, "response_metadata": metadata}
            )
        return raw


def _hit(stored: BaseMessage | None, answer: str, meta: dict[str, Any]) -> BaseMessage:
    """The message of a hit: the stored one with the post-guard text, marked as
    cached (LangChain's convention: the usage is kept, its cost zeroed)."""
    if not isinstance(stored, AIMessage):
        return AIMessage(content=answer, response_metadata={"stagecache": meta})
    update: dict[str, Any] = {
        "content": answer,
        "response_metadata": {**stored.response_metadata, "stagecache": meta},
    }
    if stored.usage_metadata:
        update["usage_metadata"] = {**stored.usage_metadata, "total_cost": 0}
    return stored.model_copy(update=update)


def _schema(tool: Any) -> dict[str, Any]:
    """A tool as an OpenAI function schema (what goes into the key)."""
    try:
        return convert_to_openai_tool(tool)
    except Exception:  # a provider's own tool type: keyed on its repr
        return {"type": "unknown", "repr": repr(tool)}


def _spec(schema: dict[str, Any], index: int, read_only: frozenset[str]) -> ToolSpec:
    function = schema.get("function", schema)
    name = function.get("name") if isinstance(function, dict) else None
    name = name if isinstance(name, str) and name else f"tool_{index}"
    description = function.get("description") if isinstance(function, dict) else ""
    parameters = function.get("parameters") if isinstance(function, dict) else {}
    return ToolSpec(
        name=name,
        description=description if isinstance(description, str) else "",
        read_only_hint=name in read_only,
        parameters=parameters if isinstance(parameters, dict) else {},
    )
