"""Stage and exporter kinds: built-ins in a dict, plugins by entry point.

A *factory* is what a ``kind`` names: an object (usually the stage class) with

- ``Config``: a msgspec Struct type, decoded strictly from the stage's TOML table
  (without its ``kind`` key);
- ``from_config(config, ctx) -> Stage``: builds the stage from its config and the
  :class:`BuildContext` (the shared event bus, tracer, cache, embedder, model client).

Third-party packages register factories in the ``stagecache.stages`` (or
``stagecache.exporters``) entry-point group::

    [project.entry-points."stagecache.stages"]
    profanity = "my_package.stages:ProfanityFilter"

Built-ins are imported lazily, so choosing a pipeline never imports what it does not
use. Every lookup error lists the valid kinds.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from stagecache.errors import PluginError

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from stagecache.pipeline._events import EventBus
    from stagecache.types import Embedder, LLMClient, Stage

__all__ = [
    "BUILTIN_EXPORTERS",
    "BUILTIN_STAGES",
    "BuildContext",
    "Factory",
    "available_kinds",
    "load_factory",
]

BUILTIN_STAGES: dict[str, str] = {
    "input_guard": "stagecache.stages.input_guard:InputGuard",
    "memory_search": "stagecache.stages.memory_search:MemorySearch",
    "cache_check": "stagecache.stages.cache_check:CacheCheck",
    "llm": "stagecache.stages.llm:LLMStage",
    "output_guard": "stagecache.stages.output_guard:OutputGuard",
    "store": "stagecache.stages.store:Store",
    "write_invalidate": "stagecache.stages.write_invalidate:WriteInvalidate",
}

BUILTIN_EXPORTERS: dict[str, str] = {
    "log": "stagecache.exporters:LogExporter",
    "otlp": "stagecache.exporters:OtlpExporter",
    "prometheus": "stagecache.exporters:PrometheusExporter",
}

_GROUPS = {"stage": "stagecache.stages", "exporter": "stagecache.exporters"}


class Factory(Protocol):
    """What a ``kind`` names: a config type and a way to build from it."""

    Config: type[msgspec.Struct]

    def from_config(self, config: Any, ctx: BuildContext) -> Any: ...


@dataclass
class BuildContext:
    """The shared parts a factory may use to build its stage or exporter.

    Attributes:
        events: the pipeline's event bus.
        tracer: the pipeline's tracer (no-op when tracing is off).
        cache: the semantic cache engine, or None when the pipeline has none.
        embedder: the query embedder, or None.
        llm: the model client, or None.
        memory: the per-user memory store, or None.
        extras: anything else a plugin wants to find (keyed by name).
    """

    events: EventBus
    tracer: Tracer
    cache: Any = None
    embedder: Embedder | None = None
    llm: LLMClient | None = None
    memory: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    closers: list[Stage] = field(default_factory=list)


def _builtins(group: str) -> dict[str, str]:
    return BUILTIN_STAGES if group == "stage" else BUILTIN_EXPORTERS


def available_kinds(group: str = "stage") -> list[str]:
    """Every kind the registry knows for ``group``: built-ins and entry points."""
    names = set(_builtins(group))
    names.update(ep.name for ep in entry_points(group=_GROUPS[group]))
    return sorted(names)


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def load_factory(kind: str, group: str = "stage") -> Factory:
    """The factory registered under ``kind``.

    Raises:
        PluginError: the kind is unknown (the message lists the valid kinds), or its
            entry point fails to import or lacks ``Config`` / ``from_config``.
    """
    builtins = _builtins(group)
    if kind in builtins:
        obj = _import(builtins[kind])
        origin = f"built-in {group} {kind!r}"
    else:
        eps = [ep for ep in entry_points(group=_GROUPS[group]) if ep.name == kind]
        if not eps:
            raise PluginError(
                f"unknown {group} kind {kind!r}; valid choices: "
                f"{', '.join(available_kinds(group))} (third-party {group}s register "
                f"in the {_GROUPS[group]!r} entry-point group)"
            )
        ep = eps[0]
        origin = f"entry point {ep.name!r} = {ep.value!r} in group {ep.group!r}"
        try:
            obj = ep.load()
        except Exception as exc:
            raise PluginError(
                f"{origin} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
    config_type = getattr(obj, "Config", None)
    if not (isinstance(config_type, type) and issubclass(config_type, msgspec.Struct)):
        raise PluginError(
            f"{origin} has no 'Config' attribute that is a msgspec.Struct"
        )
    if not callable(getattr(obj, "from_config", None)):
        raise PluginError(f"{origin} has no callable 'from_config(config, ctx)'")
    factory: Factory = obj
    return factory
