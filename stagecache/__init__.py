"""stagecache: a semantic cache inside an observable chain of async stages.

The public surface; everything else is reachable from its subpackage.
"""

from __future__ import annotations

from stagecache._cachecontrol import CacheControl
from stagecache._model import (
    CacheOutcome,
    Caller,
    Candidate,
    EarlyExit,
    GuardFinding,
    Message,
    Result,
    ToolCall,
    ToolSpec,
    Turn,
    Usage,
    Verdict,
)
from stagecache.errors import (
    BackendUnavailable,
    CacheError,
    ConfigError,
    EmbeddingError,
    InputError,
    LLMError,
    ModelNotFound,
    PluginError,
    StagecacheError,
    StageError,
    StageTimeout,
)
from stagecache.pipeline import Event, EventBus, Pipeline

__version__ = "0.1.0"


def load(path: str, **options: object) -> Pipeline:
    """Build the pipeline described by the TOML file at ``path``.

    Args:
        path: the config file.
        **options: ``llm=`` (the model client), ``tracer_provider=``, ``embedder=``, ...

    Raises:
        ConfigError: naming the file, the field, the bad value and the valid choices.
    """
    from stagecache.config import load as _load

    return _load(path, **options)  # type: ignore[arg-type]


__all__ = [
    "BackendUnavailable",
    "CacheControl",
    "CacheError",
    "CacheOutcome",
    "Caller",
    "Candidate",
    "ConfigError",
    "EarlyExit",
    "EmbeddingError",
    "Event",
    "EventBus",
    "GuardFinding",
    "InputError",
    "LLMError",
    "Message",
    "ModelNotFound",
    "Pipeline",
    "PluginError",
    "Result",
    "StageError",
    "StageTimeout",
    "StagecacheError",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "Usage",
    "Verdict",
    "__version__",
    "load",
]
