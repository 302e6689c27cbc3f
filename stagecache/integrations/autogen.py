"""AutoGen: a ``ChatCompletionClient`` that runs the stagecache chain around another.

::

    from autogen_agentchat.agents import AssistantAgent
    from stagecache.integrations.autogen import StagecacheChatCompletionClient

    client = StagecacheChatCompletionClient.default(
        inner_client, caller=stagecache.Caller(user_id="alice")
    )
    agent = AssistantAgent("assistant", model_client=client)

Every ``create``/``create_stream`` becomes one :meth:`stagecache.Pipeline.run`: the
guards, the semantic cache, write-invalidation and the traces apply to the agent's
model calls. On a miss the pipeline's LLM stage calls the *inner* client through
:class:`AutoGenModel` with the original AutoGen messages, tools and arguments, so
the inner client sees exactly what the agent sent. A response made of
``FunctionCall`` s of tools listed in ``read_only_tools`` is stored and replayed
exactly (the agent then runs the tools, live); a call of any other tool evicts the
caller's scope and is never stored. A cached answer comes back as a ``CreateResult``
with ``cached=True``, its ``thought`` and the usage of the call that made it (as
``autogen_ext``'s ChatCompletionCache does); ``create_stream`` replays it as chunks
followed by that result; a miss streams live from the inner client's
``create_stream`` (:mod:`._autogen_stream`). A read-only tool exchange after a lone
question is keyed exactly, not as history (``_autogen_messages.split_exchange``).
The client is an AutoGen component: ``dump_component()`` / ``load_component()``
(``_autogen_component``).

The request fingerprint (docs/integrations.md, "Request parameters") keys on what
the agent asked for: ``extra_create_args`` (temperature, max_tokens, ...), the tools'
names, descriptions and schemas, ``tool_choice``, and ``json_output`` (as
``response_format``: JSON mode, or the schema of a structured-output type). A
per-request cache control rides in ``extra_create_args={"cache": {...}}`` (LiteLLM's
spelling; it is removed before the inner client sees the arguments), or for every
call in the constructor's ``cache_control=``. Requests with images in a user
message go straight to the inner client. Needs ``pip install 'stagecache[autogen]'``
(autogen-core/ext 0.4+).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Self

from stagecache._cachecontrol import CacheControl
from stagecache._model import Caller, Result, ToolSpec, Turn
from stagecache.config import PipelineConfig
from stagecache.errors import LLMError
from stagecache.integrations._common import require_extra, resolve_caller
from stagecache.pipeline import Pipeline
from stagecache.stages.llm import Completion

require_extra("autogen_core", "autogen")

from autogen_core import CancellationToken, Component  # noqa: E402
from autogen_core.models import (  # noqa: E402
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema  # noqa: E402

from stagecache.integrations import _autogen_codec as codec  # noqa: E402
from stagecache.integrations import _autogen_component as component  # noqa: E402
from stagecache.integrations import _autogen_messages as convert  # noqa: E402
from stagecache.integrations._autogen_component import (  # noqa: E402
    PipelineSource,
    StagecacheClientConfig,
)
from stagecache.integrations._autogen_stream import LiveChunks, take_live  # noqa: E402

__all__ = ["AutoGenModel", "StagecacheChatCompletionClient"]

_NO_ARGS: Mapping[str, Any] = MappingProxyType({})
_chat_of, _messages_of, _with_memory = (
    convert.chat_of,
    convert.messages_of,
    convert.with_memory,
)
_completion_of, _result_of = convert.completion_of, convert.result_of
_params_of = convert.params_of
ToolChoice = Tool | Literal["auto", "required", "none"]


class _Request:
    """One ``create`` call on its way through the pipeline (see ``_CURRENT``)."""

    __slots__ = ("client", "kwargs", "live", "messages", "result")

    def __init__(
        self,
        client: ChatCompletionClient,
        messages: Sequence[LLMMessage],
        kwargs: dict[str, Any],
    ) -> None:
        self.client = client
        self.messages = messages
        self.kwargs = kwargs
        self.result: CreateResult | None = None
        self.live: Any = None  # [streaming] _autogen_stream.LiveChunks


# The LLM stage only sees the Turn; the original AutoGen request (messages with
# function calls, tool objects, extra arguments) reaches AutoGenModel through this.
_CURRENT: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "stagecache_autogen_request", default=None
)


class AutoGenModel:
    """The pipeline's model client for AutoGen: calls a ``ChatCompletionClient``.

    Inside :class:`StagecacheChatCompletionClient` it calls that wrapper's inner
    client with the agent's original request; called directly (``pipeline.run``) it
    converts the turn to AutoGen messages and calls ``inner``.

    Args:
        inner: the client used outside a wrapped call (optional).
        model_id: the id reported to the pipeline.
    """

    def __init__(
        self, inner: ChatCompletionClient | None = None, *, model_id: str = "autogen"
    ) -> None:
        self._inner = inner
        self.model_id = model_id

    async def complete(self, turn: Turn) -> Completion:
        """Ask the AutoGen client; function calls become :class:`ToolCall` s.

        Raises:
            LLMError: no client to call.
        """
        request = _CURRENT.get()
        if request is not None:
            client, messages, kwargs = request.client, request.messages, request.kwargs
        elif self._inner is not None:
            client, messages = self._inner, _messages_of(turn)
            # run(params=...): the request parameters go along, as AutoGen's own.
            kwargs = {"extra_create_args": dict(turn.params)} if turn.params else {}
        else:
            raise LLMError("AutoGenModel has no inner client to call")
        if request is not None and request.live is not None:  # [streaming]
            from stagecache.integrations._autogen_stream import stream_inner

            return await stream_inner(
                request,
                turn,
                _with_memory(messages, turn.memory),
                lambda r: _completion_of(r, self.model_id, turn, envelopes=True),
            )
        result = await client.create(_with_memory(messages, turn.memory), **kwargs)
        if request is not None:
            request.result = result
        return _completion_of(
            result, self.model_id, turn, envelopes=request is not None
        )


class StagecacheChatCompletionClient(
    ChatCompletionClient, Component[StagecacheClientConfig]
):
    """Wraps any AutoGen ``ChatCompletionClient`` in a stagecache pipeline.

    Args:
        inner: the model client that answers misses.
        pipeline: the chain to run; its model client should be an
            :class:`AutoGenModel` (see :meth:`default`), so misses reach ``inner``.
        caller: the identity every call runs as.
        caller_from: returns the identity of the current call (a contextvar lookup,
            say); it wins over ``caller`` when it returns one.
        read_only_tools: names of tools that change nothing; a call of any other
            tool evicts the caller's scope.
        model: the model id in cache keys (default: the inner client's model).
        chunk_chars: size of the chunks a cached answer is streamed in.
        owns_pipeline: close the pipeline in :meth:`close`.
        pipeline_config: how ``pipeline`` was built (a TOML file's path or the
            config), for :meth:`dump_component`; :meth:`default` and
            :meth:`from_config_file` set it.
        cache_control: the cache control of every call (a per-call
            ``extra_create_args["cache"]`` wins).
    """

    component_type = "model"
    component_config_schema = StagecacheClientConfig
    component_provider_override = (
        "stagecache.integrations.autogen.StagecacheChatCompletionClient"
    )

    def __init__(
        self,
        inner: ChatCompletionClient,
        pipeline: Pipeline,
        caller: Caller | None = None,
        caller_from: Callable[[], Caller | None] | None = None,
        *,
        read_only_tools: Collection[str] = (),
        model: str | None = None,
        chunk_chars: int = 16,
        owns_pipeline: bool = False,
        pipeline_config: PipelineConfig | str | Path | None = None,
        cache_control: CacheControl | Mapping[str, Any] | None = None,
    ) -> None:
        self._inner = inner
        self._cache_control = cache_control
        self._pipeline = pipeline
        self._caller = caller
        self._caller_from = caller_from
        self._read_only = frozenset(read_only_tools)
        self._model = model or _model_name(inner)
        self._chunk = max(1, chunk_chars)
        self._owns = owns_pipeline
        self._actual = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self.last_result: Result | None = None
        self._source: PipelineSource | Literal[False] = (
            Path(pipeline_config)
            if isinstance(pipeline_config, str | Path)
            else (pipeline_config if pipeline_config is not None else False)
        )

    @classmethod
    def default(
        cls,
        inner: ChatCompletionClient,
        caller: Caller | None = None,
        caller_from: Callable[[], Caller | None] | None = None,
        *,
        read_only_tools: Collection[str] = (),
        model: str | None = None,
        cache_control: CacheControl | Mapping[str, Any] | None = None,
        **pipeline_options: Any,
    ) -> StagecacheChatCompletionClient:
        """The wrapper around :meth:`stagecache.Pipeline.default` (which it owns).

        Args:
            inner: the model client that answers misses.
            caller: as for the constructor.
            caller_from: as for the constructor.
            read_only_tools: as for the constructor.
            model: as for the constructor.
            cache_control: as for the constructor.
            **pipeline_options: for ``Pipeline.default`` (``embedder=``, ``cache=``).
        """
        model_id = model or _model_name(inner)
        pipeline = Pipeline.default(
            llm=AutoGenModel(inner, model_id=model_id), **pipeline_options
        )
        client = cls(
            inner,
            pipeline,
            caller,
            caller_from,
            read_only_tools=read_only_tools,
            model=model_id,
            owns_pipeline=True,
            cache_control=cache_control,
        )
        client._source = component.source_of(pipeline_options)
        return client

    @classmethod
    def from_config_file(
        cls,
        inner: ChatCompletionClient,
        path: str | Path,
        caller: Caller | None = None,
        caller_from: Callable[[], Caller | None] | None = None,
        *,
        read_only_tools: Collection[str] = (),
        model: str | None = None,
        chunk_chars: int = 16,
        cache_control: CacheControl | Mapping[str, Any] | None = None,
    ) -> StagecacheChatCompletionClient:
        """The wrapper around the pipeline a TOML file describes (which it owns).

        Args:
            inner: the model client that answers misses.
            path: the pipeline file (``stagecache.load``).
            caller: as for the constructor.
            caller_from: as for the constructor.
            read_only_tools: as for the constructor.
            model: as for the constructor.
            chunk_chars: as for the constructor.
            cache_control: as for the constructor.

        Raises:
            ConfigError: the file is missing or has a bad field.
        """
        model_id = model or _model_name(inner)
        pipeline = Pipeline.load(path, llm=AutoGenModel(inner, model_id=model_id))
        return cls(
            inner,
            pipeline,
            caller,
            caller_from,
            read_only_tools=read_only_tools,
            model=model_id,
            chunk_chars=chunk_chars,
            owns_pipeline=True,
            pipeline_config=path,
            cache_control=cache_control,
        )

    def _to_config(self) -> StagecacheClientConfig:
        """The component config (see ``_autogen_component``).

        Raises:
            ConfigError: what a config cannot carry (``caller_from``, a pipeline
                built by hand, a Redis password).
        """
        return component.to_config(
            self._inner,
            self._source,
            caller=self._caller,
            caller_from=self._caller_from,
            read_only_tools=self._read_only,
            model=self._model,
            chunk_chars=self._chunk,
            cache_control=self._cache_control,
        )

    @classmethod
    def _from_config(cls, config: StagecacheClientConfig) -> Self:
        """A client built from its component config (it owns its pipeline).

        Raises:
            ConfigError: a missing ``config_file`` or a bad pipeline table.
        """
        source = component.pipeline_of(config)
        inner = ChatCompletionClient.load_component(config.client)
        model_id = config.model or _model_name(inner)
        pipeline = component.build_pipeline(
            source, AutoGenModel(inner, model_id=model_id)
        )
        client = cls(
            inner,
            pipeline,
            None if config.caller is None else config.caller.caller(),
            read_only_tools=config.read_only_tools,
            model=model_id,
            chunk_chars=config.chunk_chars,
            owns_pipeline=True,
            cache_control=config.cache_control,
        )
        client._source = source
        return client

    @property
    def pipeline(self) -> Pipeline:
        """The chain this client runs."""
        return self._pipeline

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[Any] | None = None,
        extra_create_args: Mapping[str, Any] = _NO_ARGS,
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """Answer from the cache, or through the chain from the inner client."""
        control = extra_create_args.get("cache", self._cache_control)
        if "cache" in extra_create_args:
            extra_create_args = {
                k: v for k, v in extra_create_args.items() if k != "cache"
            }
        kwargs: dict[str, Any] = {
            "tools": tools,
            "tool_choice": tool_choice,
            "json_output": json_output,
            "extra_create_args": extra_create_args,
            "cancellation_token": cancellation_token,
        }
        keyed, exchange = convert.keyed_exchange(
            messages, self._read_only, self._pipeline.stages
        )
        chat = _chat_of(keyed)
        if chat is None:
            result = await self._inner.create(messages, **kwargs)
            self._count(result)
            return result
        request = _Request(self._inner, messages, kwargs)
        request.live = take_live()  # [streaming] set by create_stream
        token = _CURRENT.set(request)
        try:
            outcome = await self._pipeline.run(
                chat,
                caller=resolve_caller(self._caller, self._caller_from),
                model=self._model,
                instructions=codec.keyed_instructions(chat, exchange),
                tools=[self._spec(t) for t in tools],
                params=_params_of(tool_choice, json_output, extra_create_args),
                cache=control,
            )
        finally:
            _CURRENT.reset(token)
        self.last_result = outcome
        result = _result_of(outcome, request.result, _hit_usage(outcome))
        if result.cached and not self._replayable(result, tools):
            # A stored call of a tool this request does not offer as read-only:
            # never replayed; the model answers.
            result = await self._inner.create(messages, **kwargs)
        self._count(result)
        return result

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: ToolChoice = "auto",
        json_output: bool | type[Any] | None = None,
        extra_create_args: Mapping[str, Any] = _NO_ARGS,
        cancellation_token: CancellationToken | None = None,
        include_usage: bool | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Stream the answer: text chunks, then the final ``CreateResult``.

        A miss streams live from the inner client's ``create_stream``, its text
        through the output guard's detectors (only what could still match is held
        back); a hit is replayed in chunks.
        """
        # [streaming] live misses: stagecache.integrations._autogen_stream
        live = LiveChunks(self._pipeline)
        with live.offered():
            task = asyncio.ensure_future(
                self.create(
                    messages,
                    tools=tools,
                    tool_choice=tool_choice,
                    json_output=json_output,
                    extra_create_args=extra_create_args,
                    cancellation_token=cancellation_token,
                )
            )
        try:
            async for piece in live.pieces(task):
                yield piece
            result = await task
        finally:
            if not task.done():
                task.cancel()
        if not live.started and isinstance(result.content, str):
            text = result.content
            for start in range(0, len(text), self._chunk):
                yield text[start : start + self._chunk]
        yield result

    async def close(self) -> None:
        """Close the inner client (and the pipeline when this client owns it)."""
        await self._inner.close()
        if self._owns:
            await self._pipeline.aclose()

    def actual_usage(self) -> RequestUsage:
        """Tokens the inner model really spent (cache hits count zero)."""
        return self._actual

    def total_usage(self) -> RequestUsage:
        """Tokens of every answer returned, a hit counting its original usage."""
        return self._total

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        """As the inner client counts them."""
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
    ) -> int:
        """As the inner client counts them."""
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """The inner client's (deprecated in AutoGen; see ``model_info``)."""
        return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        """The inner client's model info."""
        return self._inner.model_info

    def _replayable(
        self, result: CreateResult, tools: Sequence[Tool | ToolSchema]
    ) -> bool:
        if isinstance(result.content, str):
            return True
        offered = {self._spec(t).name for t in tools} & self._read_only
        return all(call.name in offered for call in result.content)

    def _spec(self, tool: Tool | ToolSchema) -> ToolSpec:
        schema: Mapping[str, Any] = tool.schema if isinstance(tool, Tool) else tool
        name = str(schema["name"])
        return ToolSpec(
            name=name,
            description=str(schema.get("description", "")),
            read_only_hint=name in self._read_only,
            parameters=dict(schema.get("parameters") or {}),
        )

    def _count(self, result: CreateResult) -> None:
        usage = result.usage
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total.completion_tokens + usage.completion_tokens,
        )
        if not result.cached:
            self._actual = RequestUsage(
                prompt_tokens=self._actual.prompt_tokens + usage.prompt_tokens,
                completion_tokens=self._actual.completion_tokens
                + usage.completion_tokens,
            )


def _model_name(client: ChatCompletionClient) -> str:
    create_args = getattr(client, "_create_args", None)
    if isinstance(create_args, Mapping) and isinstance(create_args.get("model"), str):
        return str(create_args["model"])
    return type(client).__name__


def _hit_usage(outcome: Result) -> RequestUsage | None:
    """On a hit, the usage of the call that made the entry (stored beside it)."""
    if not outcome.cache.hit:
        return None
    counts = outcome.cache.metadata
    return RequestUsage(
        prompt_tokens=_count(counts.get("prompt_tokens")),
        completion_tokens=_count(counts.get("completion_tokens")),
    )


def _count(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
