"""Pipeline configuration: a TOML file decoded into strict, frozen msgspec Structs.

::

    [pipeline]
    model = "gpt-4o-mini"          # model id used in cache keys when run() gets none

    [cache]                        # stagecache.cache.CacheSettings
    scope = "per_user"             # threshold = 0.95: a hard cosine floor (optional)

    [embedder]                     # stagecache.embeddings.EmbedderConfig
    kind = "sentence_transformers"

    [llm]                          # optional: the model client
    kind = "scripted"

    [[stages]]                     # the chain, in order; each picked by ``kind``
    kind = "input_guard"

Every table is strict: an unknown field, an unknown kind or a bad value fails at load
with a :class:`~stagecache.errors.ConfigError` that names the file, the field, the bad
value and the valid choices. Every number has bounds (finite, in range), checked by
one function for every section (:mod:`stagecache._validate`); regexes are compiled by
RE2 (:mod:`stagecache._regex`); tables nested deeper than 16 levels are refused.
Stage kinds come from the built-ins and the ``stagecache.stages`` entry-point group;
no import strings in config files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
from opentelemetry.trace import TracerProvider

from stagecache._configerrors import Collector, ConfigErrors
from stagecache._configparse import (
    check_embedder,
    load_config,
    parse_config,
    parse_sections,
    read_toml,
    stage_config,
    verifier_config,
)
from stagecache._configtypes import (
    DEFAULT_STAGES,
    LLMConfig,
    MemoryConfig,
    OpenAIChatConfig,
    PipelineConfig,
    PipelineSection,
    ScriptedLLMConfig,
)
from stagecache.cache import CacheSettings, SemanticCache
from stagecache.errors import ConfigError
from stagecache.exporters._pricing import ModelPrice
from stagecache.memory import MemoryStore
from stagecache.pipeline._cacheapi import CacheAPI
from stagecache.pipeline._events import EventBus
from stagecache.pipeline._pipeline import Pipeline
from stagecache.pipeline._registry import BuildContext
from stagecache.pipeline._tracing import make_tracer
from stagecache.types import Embedder, LLMClient

__all__ = [
    "DEFAULT_STAGES",
    "ConfigErrors",
    "LLMConfig",
    "MemoryConfig",
    "OpenAIChatConfig",
    "PipelineConfig",
    "PipelineSection",
    "ScriptedLLMConfig",
    "build",
    "check_file",
    "load",
    "load_config",
    "parse_config",
]


def check_file(path: str | Path) -> PipelineConfig:
    """Run every check :func:`load` runs on a file, without loading or opening
    anything (``stagecache check-config``).

    A file without ``[llm]`` leaves the client to the code (``load(path,
    llm=...)``), so it is checked as if one were passed.

    Raises:
        ConfigError: the one problem found; ConfigErrors: several.
    """
    config, _ = _load_checked(path, llm=None, check_only=True)
    return config


def _placeholder_llm() -> LLMClient:
    from stagecache.testing import ScriptedLLM

    return ScriptedLLM(str, delay_s=0)


def _load_checked(
    path: str | Path, *, llm: LLMClient | None, check_only: bool, **options: Any
) -> tuple[PipelineConfig, Pipeline]:
    """Parse and build ``path``, reporting every problem of both steps.

    When some tables are bad, the rest is still built (without them) so that what
    only construction checks (rule ids, keys) is reported in the same error.
    """
    file = str(path)
    partial, found = parse_sections(read_toml(path), file)
    if check_only:
        options["tracing"] = False  # no OTLP exporter is started to be checked
        if llm is None and partial.config.llm is None:
            llm = _placeholder_llm()
    if found.errors:
        with found.check():
            _build(
                partial.config,
                llm=llm if llm is not None or partial.llm_ok else _placeholder_llm(),
                file=file,
                positions=partial.positions,
                exporter_positions=partial.exporter_positions,
                **{**options, "tracing": False},
            )
        found.raise_any()
    return partial.config, build(partial.config, llm=llm, file=file, **options)


def _verifier(
    config: PipelineConfig, file: str | None, embedder: Embedder | None
) -> Any:
    """The verifier, calibrated for the pipeline's embedder, holding the cache's
    threshold as a hard floor (when set)."""
    from stagecache.quality import make_verifier

    return make_verifier(
        verifier_config(config.verifier, file),
        embedder_id=None if embedder is None else embedder.model_id,
        threshold=config.cache.threshold,
    )


def _otlp_tracing(config: PipelineConfig, file: str | None) -> TracerProvider | None:
    """A tracer provider exporting over OTLP when an ``otlp`` exporter asks for it."""
    for i, table in enumerate(config.exporters):
        if table.get("kind") != "otlp":
            continue
        _, otlp = stage_config(table, i, file, group="exporter")
        if otlp.traces:
            from stagecache.exporters import setup_tracing

            return setup_tracing(otlp)
    return None


def _llm(config: LLMConfig | None) -> LLMClient | None:
    if config is None:
        return None
    if isinstance(config, ScriptedLLMConfig):
        from stagecache.testing import ScriptedLLM

        template = config.template
        return ScriptedLLM(lambda p: template.format(prompt=p), delay_s=config.delay_s)
    from stagecache.clients import OpenAIChatClient

    return OpenAIChatClient.from_config(config)


def build(
    config: PipelineConfig | None = None,
    *,
    llm: LLMClient | None = None,
    embedder: Embedder | None = None,
    tracer_provider: TracerProvider | None = None,
    tracing: bool | None = None,
    cache: CacheSettings | None = None,
    file: str | None = None,
) -> Pipeline:
    """Build a pipeline from a config (default: the seven-stage chain).

    Args:
        config: the decoded config; None for the defaults.
        llm: the model client (overrides ``[llm]``).
        embedder: an embedder instance (overrides ``[embedder]``).
        tracer_provider: OpenTelemetry provider (default: the global one).
        tracing: overrides ``[pipeline] tracing``.
        cache: cache settings (override ``[cache]``).
        file: the config file, named in error messages.

    Raises:
        ConfigError: a bad value, or a stage that lacks what it needs.
    """
    return _build(
        config,
        llm=llm,
        embedder=embedder,
        tracer_provider=tracer_provider,
        tracing=tracing,
        cache=cache,
        file=file,
    )


def _build(
    config: PipelineConfig | None = None,
    *,
    llm: LLMClient | None = None,
    embedder: Embedder | None = None,
    tracer_provider: TracerProvider | None = None,
    tracing: bool | None = None,
    cache: CacheSettings | None = None,
    file: str | None = None,
    positions: list[int] | None = None,
    exporter_positions: list[int] | None = None,
) -> Pipeline:
    """:func:`build`; ``positions`` name each stage (exporter) by its index in the
    file when some tables were left out (see :func:`_parse`)."""
    config = config or PipelineConfig()
    if cache is not None:
        cache.check(path=file)
        config = msgspec.structs.replace(config, cache=cache)
    section = config.pipeline
    enabled = section.tracing if tracing is None else tracing
    events = EventBus()
    given_provider = tracer_provider
    if tracer_provider is None and enabled:
        tracer_provider = _otlp_tracing(config, file)
    tracer = make_tracer(tracer_provider, enabled=enabled)
    # Each part is built on its own and a failure does not stop the others, so one
    # load reports every problem (with its full dotted path), as check-config does.
    found = Collector(file)
    if embedder is None:
        from stagecache.embeddings import make_embedder

        with found.check("embedder"):
            embedder = make_embedder(check_embedder(config, file), events=events)
    owned: list[Any] = []  # built here from the config, so closed with the pipeline
    model = llm
    if model is None:
        with found.check("llm"):
            model = _llm(config.llm)
        owned.append(model)
    if tracer_provider is not None and tracer_provider is not given_provider:
        owned.append(_ProviderCloser(tracer_provider))
    verifier = None
    with found.check("verifier"):
        verifier = _verifier(config, file, embedder)
    engine: SemanticCache | None = None
    with found.check("cache"):
        engine = SemanticCache(config.cache, verifier=verifier, events=events)
    if engine is None or embedder is None:  # the stages cannot be built without
        found.raise_any()
        raise ConfigError("cannot build the cache or the embedder", path=file)
    memory = MemoryStore(embedder, max_facts_per_user=config.memory.max_facts_per_user)
    ctx = BuildContext(
        events=events,
        tracer=tracer,
        cache=engine,
        embedder=embedder,
        llm=model,
        memory=memory,
        extras={"record_query_text": section.record_query_text},
    )
    stages = []
    places = positions or range(len(config.stages))
    for i, table in zip(places, config.stages, strict=True):
        with found.check(f"stages[{i}]"):
            factory, stage_cfg = stage_config(table, i, file, group="stage")
            stages.append(factory.from_config(stage_cfg, ctx))
    exporters = []
    prices: dict[str, Any] = {}  # for stats(): the exporters', then [pipeline]'s
    places = exporter_positions or range(len(config.exporters))
    for i, table in zip(places, config.exporters, strict=True):
        with found.check(f"exporters[{i}]"):
            factory, exp_config = stage_config(table, i, file, group="exporter")
            exporters.append(factory.from_config(exp_config, ctx))
            prices.update(_prices_of(exp_config))
    prices.update(section.prices)
    found.raise_any()
    for exporter in exporters:
        events.subscribe(exporter)
    api = CacheAPI(
        engine,
        embedder,
        memory,
        events=events,
        default_model=section.model,
        default_instructions=section.instructions,
        guards=[s for s in stages if s.name in ("input_guard", "output_guard")],
        prices=prices,
    )
    return Pipeline(
        stages,
        events=events,
        tracer_provider=tracer_provider,
        tracing=enabled,
        default_model=section.model,
        default_instructions=section.instructions,
        components=[
            embedder,
            _MatchDim(embedder, engine),
            engine,
            *exporters,
            *(o for o in owned if o is not None),
        ],
        cache=api,
        record_query_text=section.record_query_text,
        record_error_messages=section.record_error_messages,
    )


def _prices_of(exporter_config: object) -> dict[str, ModelPrice]:
    """The ``prices`` table of an exporter's config, if it has one."""
    table = getattr(exporter_config, "prices", None)
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(v, ModelPrice)}


class _ProviderCloser:
    """Flushes and shuts down a tracer provider the pipeline created itself."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider

    async def aclose(self) -> None:
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            await anyio.to_thread.run_sync(shutdown)


class _MatchDim:
    """Gives the cache engine the embedder's dimension once the model is loaded.

    The dimension of a local model is known only after loading it, which belongs in
    ``warm_up()``, so it cannot be passed when the engine is built.
    """

    def __init__(self, embedder: Embedder, engine: SemanticCache) -> None:
        self._embedder = embedder
        self._engine = engine

    async def warm_up(self) -> None:
        self._engine.dim = self._embedder.dim


def load(path: str | Path, *, llm: LLMClient | None = None, **options: Any) -> Pipeline:
    """Build the pipeline described by the TOML file at ``path``.

    Raises:
        ConfigError: naming the file, the field, the bad value and the valid choices
            (:class:`ConfigErrors`, listing each, when there are several).
    """
    try:
        return _load_checked(path, llm=llm, check_only=False, **options)[1]
    except ConfigError as exc:
        if exc.path is None:
            raise ConfigError(str(exc), path=str(path)) from None
        raise
