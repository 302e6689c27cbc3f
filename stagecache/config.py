"""Pipeline configuration: a TOML file decoded into strict, frozen msgspec Structs.

::

    [pipeline]
    model = "gpt-4o-mini"          # model id used in cache keys when run() gets none

    [cache]                        # stagecache.cache.CacheSettings
    scope = "per_user"
    threshold = 0.92

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

import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import anyio
import msgspec
from opentelemetry.trace import TracerProvider

from stagecache._configerrors import (
    Collector,
    ConfigErrors,
    convert_strict,
    struct_field_names,
)
from stagecache._validate import CheckNumbers, Delay, Retries, Seconds, check_depth
from stagecache.cache import CacheSettings, SemanticCache
from stagecache.embeddings import embedder_config
from stagecache.errors import ConfigError
from stagecache.memory import MemoryStore
from stagecache.pipeline._cacheapi import CacheAPI
from stagecache.pipeline._events import EventBus
from stagecache.pipeline._pipeline import Pipeline
from stagecache.pipeline._registry import BuildContext, load_factory
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
]

DEFAULT_STAGES: tuple[str, ...] = (
    "input_guard",
    "memory_search",
    "cache_check",
    "llm",
    "output_guard",
    "store",
    "write_invalidate",
)


class PipelineSection(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """The ``[pipeline]`` table.

    Attributes:
        model: model id used (and keyed on) when ``run()`` passes none.
        instructions: default system prompt (its hash is part of the cache key).
        tracing: False switches spans off.
        record_query_text: put the raw query on cache spans (debugging only: it
            puts user text into your traces).
        record_error_messages: put error messages of the model client, embedder,
            backends and plugins into spans, events and logs, stripped of the
            request's text, PII-redacted and cut to 200 characters (off: only the
            type, status and length; see docs/security.md).
    """

    model: str = "default"
    instructions: str = ""
    tracing: bool = True
    record_query_text: bool = False
    record_error_messages: bool = False


class ScriptedLLMConfig(
    msgspec.Struct,
    CheckNumbers,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
    tag="scripted",
):
    """A local scripted model (for demos and tests): echoes a template after a delay."""

    delay_s: Delay = 0.5
    template: str = "Here is what I know about: {prompt}"


class OpenAIChatConfig(
    msgspec.Struct,
    CheckNumbers,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
    tag="openai",
):
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: Seconds = 60.0
    max_retries: Retries = 2


LLMConfig = ScriptedLLMConfig | OpenAIChatConfig


class MemoryConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """The ``[memory]`` table: the per-user memory store."""

    max_facts_per_user: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000


class PipelineConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """A whole pipeline file. Stage and exporter tables are checked by their kind."""

    pipeline: PipelineSection = PipelineSection()
    cache: CacheSettings = CacheSettings()
    embedder: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"kind": "sentence_transformers"}
    )
    verifier: dict[str, Any] = {}
    llm: LLMConfig | None = None
    memory: MemoryConfig = MemoryConfig()
    stages: list[dict[str, Any]] = msgspec.field(
        default_factory=lambda: [{"kind": k} for k in DEFAULT_STAGES]
    )
    exporters: list[dict[str, Any]] = []


def load_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline file (stage tables included).

    Raises:
        ConfigError: the file is missing, is not TOML, or has a bad field
            (:class:`ConfigErrors` when it has several).
    """
    return parse_config(_read(path), file=str(path))


def _read(path: str | Path) -> dict[str, Any]:
    file = str(path)
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=file) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError(
            "tables or arrays are nested too deeply to parse", path=file
        ) from None


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
    partial, found = _parse(_read(path), file)
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


def parse_config(raw: dict[str, Any], *, file: str | None = None) -> PipelineConfig:
    """Check decoded TOML and return the typed config.

    Every section (each top-level table, each stage and exporter table) is checked
    on its own and checking goes on after a failure, so one call reports every
    problem of the file.

    Raises:
        ConfigError: the one problem found, with its full dotted path.
        ConfigErrors: several problems (``.errors`` holds each).
    """
    partial, found = _parse(raw, file)
    found.raise_any()
    return partial.config


class _Partial(NamedTuple):
    """The well-formed part of a file: what can still be built to find more errors.

    ``positions`` maps each stage (exporter) kept to its index in the file.
    """

    config: PipelineConfig
    positions: list[int] | None
    exporter_positions: list[int] | None
    llm_ok: bool


def _parse(raw: dict[str, Any], file: str | None) -> tuple[_Partial, Collector]:
    check_depth(raw, path=file)
    found = Collector(file)
    hints = typing.get_type_hints(PipelineConfig)
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            valid = ", ".join(struct_field_names(PipelineConfig))
            found.errors.append(
                ConfigError(
                    f"unknown field; valid fields: {valid}", path=file, field=key
                )
            )
            continue
        if key in ("stages", "exporters"):
            value = _tables(value, key, found)
            if value is None:
                continue
        with found.check(key):
            sections[key] = convert_strict(value, hints[key], file=file, prefix=key)
    checks = {
        "cache": lambda v: v.check(path=file),
        "embedder": lambda v: embedder_config(v, path=file),
        "verifier": lambda v: _verifier_config(v, file),
    }
    for key, check in checks.items():
        if key in sections and not _passes(found, key, check, sections[key]):
            del sections[key]  # built with the defaults to find the other errors
    kept: dict[str, list[int]] = {}
    for group, section in (("stage", "stages"), ("exporter", "exporters")):
        tables = sections.get(section, [])
        kept[section] = [
            i
            for i, table in enumerate(tables)
            if _passes(
                found,
                f"{section}[{i}]",
                lambda t, i=i, g=group: _stage_config(t, i, file, group=g),
                table,
            )
        ]
        if section in sections:
            sections[section] = [tables[i] for i in kept[section]]
    llm_ok = "llm" in sections or "llm" not in raw
    partial = _Partial(
        PipelineConfig(**sections),
        kept["stages"] if "stages" in sections else None,
        kept["exporters"] if "exporters" in sections else None,
        llm_ok,
    )
    return partial, found


def _passes(found: Collector, prefix: str, check: Any, value: Any) -> bool:
    before = len(found.errors)
    with found.check(prefix):
        check(value)
    return len(found.errors) == before


def _tables(value: Any, key: str, found: Collector) -> list[Any] | None:
    """``value`` if it is an array of tables, else None with the error recorded."""
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        return value
    found.errors.append(
        ConfigError(
            f"expected an array of tables ([[{key}]]), got {value!r:.80}",
            path=found.file,
            field=key,
        )
    )
    return None


def _check_embedder(config: PipelineConfig, file: str | None) -> Any:
    return embedder_config(config.embedder, path=file)


def _stage_config(
    table: dict[str, Any], index: int, file: str | None, *, group: str
) -> tuple[Any, Any]:
    section = "stages" if group == "stage" else "exporters"
    where = f"{section}[{index}]"
    kind = table.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(
            f"every table needs a string 'kind' (got {kind!r})",
            path=file,
            field=f"{where}.kind",
        )
    try:
        factory = load_factory(kind, group)
    except ConfigError as exc:
        raise ConfigError(str(exc), path=file, field=f"{where}.kind") from None
    rest = {k: v for k, v in table.items() if k != "kind"}
    return factory, convert_strict(rest, factory.Config, file=file, prefix=where)


def _verifier_config(table: dict[str, Any], file: str | None) -> Any:
    from stagecache.quality import VerifierConfig

    return convert_strict(table, VerifierConfig, file=file, prefix="verifier")


def _verifier(config: PipelineConfig, file: str | None) -> Any:
    from stagecache.quality import make_verifier

    return make_verifier(_verifier_config(config.verifier, file))


def _otlp_tracing(config: PipelineConfig, file: str | None) -> TracerProvider | None:
    """A tracer provider exporting over OTLP when an ``otlp`` exporter asks for it."""
    for i, table in enumerate(config.exporters):
        if table.get("kind") != "otlp":
            continue
        _, otlp = _stage_config(table, i, file, group="exporter")
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
            embedder = make_embedder(_check_embedder(config, file), events=events)
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
        verifier = _verifier(config, file)
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
            factory, stage_config = _stage_config(table, i, file, group="stage")
            stages.append(factory.from_config(stage_config, ctx))
    exporters = []
    places = exporter_positions or range(len(config.exporters))
    for i, table in zip(places, config.exporters, strict=True):
        with found.check(f"exporters[{i}]"):
            factory, exp_config = _stage_config(table, i, file, group="exporter")
            exporters.append(factory.from_config(exp_config, ctx))
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
