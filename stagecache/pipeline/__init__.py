"""The runner, the event bus and the registry of stage kinds."""

from __future__ import annotations

from stagecache.pipeline._events import Event, EventBus
from stagecache.pipeline._pipeline import Pipeline
from stagecache.pipeline._registry import BuildContext, available_kinds, load_factory
from stagecache.pipeline._runner import CLEANUPS, Runner

__all__ = [
    "CLEANUPS",
    "BuildContext",
    "Event",
    "EventBus",
    "Pipeline",
    "Runner",
    "available_kinds",
    "load_factory",
]
