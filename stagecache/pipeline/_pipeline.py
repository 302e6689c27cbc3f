"""The public :class:`Pipeline`: a chain of stages with its shared parts.

``async with pipeline`` warms up every component and stage (models, indexes,
connections) and closes them in reverse order on exit. ``await pipeline.run(...)``
runs one request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import TracerProvider

from stagecache._cachecontrol import CacheControl
from stagecache._model import Caller, Message, Result, ToolSpec
from stagecache.errors import BackendUnavailable, StagecacheError
from stagecache.pipeline._events import EventBus
from stagecache.pipeline._runner import Runner
from stagecache.pipeline._tracing import make_tracer
from stagecache.types import LLMClient, Stage

if TYPE_CHECKING:
    from stagecache.pipeline._cacheapi import CacheAPI

__all__ = ["Pipeline"]


class Pipeline:
    """A runnable chain of stages.

    Build one with :meth:`default`, :func:`stagecache.load`, or directly from stages.

    Args:
        stages: the chain, in order.
        events: the event bus (a new one by default).
        tracer_provider: OpenTelemetry provider for spans (default: the global one).
        tracing: False switches spans off (a no-op tracer).
        default_model: the model id used when ``run`` gets none.
        components: shared parts to warm up before and close after the stages
            (embedder, cache engine, memory store, exporters): anything with
            optional ``warm_up()`` / ``aclose()``.
        cache: the operator API of the cache (``pipeline.cache``), if any.
        record_query_text: put the raw query on the request span (debugging only;
            by default spans carry its hash and length).
        record_error_messages: let foreign error messages (scrubbed of request
            text and PII, capped) into spans, events and logs; by default only
            their type, status and length.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        events: EventBus | None = None,
        tracer_provider: TracerProvider | None = None,
        tracing: bool = True,
        default_model: str = "default",
        default_instructions: str = "",
        components: Sequence[Any] = (),
        cache: CacheAPI | None = None,
        record_query_text: bool = False,
        record_error_messages: bool = False,
    ) -> None:
        self.events = events or EventBus()
        self.tracer = make_tracer(tracer_provider, enabled=tracing)
        self._runner = Runner(
            stages,
            tracer=self.tracer,
            events=self.events,
            default_model=default_model,
            record_query_text=record_query_text,
            record_error_messages=record_error_messages,
        )
        self._default_instructions = default_instructions
        self._components = tuple(components)
        self._cache = cache
        self._open = False

    # -- construction -----------------------------------------------------------

    @classmethod
    def default(cls, *, llm: LLMClient, **options: Any) -> Pipeline:
        """The seven-stage chain with the embedded defaults.

        ``input guard -> memory search -> cache check -> llm -> output guard -> store
        -> write-invalidate``, per-user scope, the local MiniLM embedder, the
        in-memory backend.

        Args:
            llm: the model client (``stagecache.testing.ScriptedLLM`` offline).
            **options: as for :func:`stagecache.build` (``config=``, ``embedder=``,
                ``tracer_provider=``, ``tracing=``, ``cache=`` settings, ...).
        """
        from stagecache.config import build

        return build(llm=llm, **options)

    @classmethod
    def load(
        cls, path: str | Path, *, llm: LLMClient | None = None, **options: Any
    ) -> Pipeline:
        """Build the pipeline a TOML file describes (see :func:`stagecache.load`)."""
        from stagecache.config import load

        return load(path, llm=llm, **options)

    # -- lifecycle --------------------------------------------------------------

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The chain, in order."""
        return self._runner.stages

    @property
    def components(self) -> tuple[Any, ...]:
        """The shared parts (embedder, cache engine, exporters) the pipeline owns."""
        return self._components

    @property
    def cache(self) -> CacheAPI:
        """Operator API of the semantic cache (purge, invalidate, import, feedback).

        Raises:
            StagecacheError: the pipeline has no cache.
        """
        if self._cache is None:
            raise StagecacheError("this pipeline has no cache stage")
        return self._cache

    async def warm_up(self) -> None:
        """Load models, open backends, rebuild indexes: everything heavy, once.

        A part that can run degraded (the cache engine: ``start_degraded``) and
        fails for want of storage (``BackendUnavailable``, ``OSError``: a full disk,
        an unreachable backend) does not stop the start: it logs the typed error,
        publishes a ``cache.error`` event (operation ``warm_up``) and runs without
        the cache, so requests are answered by the model.
        """
        if self._open:
            return
        opened: list[Any] = []
        try:
            for part in (*self._components, *self.stages):
                warm = getattr(part, "warm_up", None)
                if warm is not None:
                    await _warm(part, warm)
                opened.append(part)
        except BaseException:
            await _close_all(opened)
            raise
        self._open = True

    async def aclose(self) -> None:
        """Close stages and components, in reverse order of warm-up."""
        if not self._open:
            return
        self._open = False
        await _close_all([*self._components, *self.stages])

    async def __aenter__(self) -> Pipeline:
        await self.warm_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- running ----------------------------------------------------------------

    async def run(
        self,
        messages: str | list[Message] | list[dict[str, Any]],
        *,
        caller: Caller | None = None,
        model: str | None = None,
        instructions: str | None = None,
        tools: Sequence[ToolSpec | dict[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        cache: CacheControl | Mapping[str, Any] | None = None,
    ) -> Result:
        """Run one request through the chain.

        Args:
            messages: the user's text, or chat messages ``[{"role", "content"}]``.
            caller: who is asking; without a ``user_id`` the request is not cached
                (unless the scope is ``shared``).
            model: the model id (part of the cache key).
            instructions: the system prompt (its hash is part of the cache key);
                default: the system messages, else the pipeline's default.
            tools: tool specs; ``read_only_hint=False`` marks a writing tool.
                Their names, descriptions and schemas are part of the key.
            params: the other request parameters, in OpenAI's names
                (``temperature``, ``response_format``, ``max_tokens``, ...):
                those that change the answer are part of the key, some make the
                request uncacheable (``n > 1``); see docs/integrations.md.
                Model clients that speak OpenAI send them along.
            cache: per-request cache control, a :class:`~stagecache.CacheControl`
                or a dict in LiteLLM's spelling (``{"no-cache": True}``,
                ``no-store``, ``ttl``, ``s-maxage``, ``namespace``).

        Returns:
            The :class:`~stagecache.Result`: ``answer``, ``cache.hit``, ...

        Raises:
            InputError: malformed messages, caller, tools, params or cache.
            StageError: a stage with the ``fail`` policy (the model call) failed.
        """
        if not self._open:
            await self.warm_up()
        if instructions is None and isinstance(messages, str):
            instructions = self._default_instructions
        turn = self._runner.make_turn(
            messages,
            caller=caller,
            model=model,
            instructions=instructions,
            tools=tools,
            params=params,
            cache=cache,
        )
        return await self._runner.run(turn)


async def _warm(part: Any, warm: Any) -> None:
    try:
        await warm()
    except (BackendUnavailable, OSError) as exc:
        degrade = getattr(part, "start_degraded", None)
        if degrade is None:
            raise
        degrade(exc)


async def _close_all(parts: Sequence[Any]) -> None:
    first: BaseException | None = None
    for part in reversed(parts):
        close = getattr(part, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception as exc:  # close everything, then report the first failure
            first = first or exc
    if first is not None:
        raise first
