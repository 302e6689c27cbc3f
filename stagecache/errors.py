"""The one error hierarchy of stagecache.

::

    StagecacheError
    ├── ConfigError              bad config (names file, field, value, choices)
    │   └── PluginError          a plugin that cannot be loaded or is malformed
    ├── InputError               a request that cannot be accepted
    ├── StageError               a stage failed at run time; carries ``stage``
    │   └── StageTimeout         a stage ran past its ``timeout_s``
    ├── CacheError               the cache engine or a backend failed
    │   └── BackendUnavailable   a backend is down or cannot write
    ├── EmbeddingError           an embedder failed or returned bad vectors
    │   └── ModelNotFound        the configured model cannot be loaded offline
    └── LLMError                 the model client failed

Foreign exceptions (``httpx``, ``sqlite3``, ``redis``, ``hnswlib``) are translated at
the boundary of the module that talks to them, with the original kept as
``__cause__``. Ending a turn early (a guard refusal) is not an error: it is the
:class:`stagecache.EarlyExit` value.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "CacheError",
    "ConfigError",
    "EmbeddingError",
    "InputError",
    "LLMError",
    "ModelNotFound",
    "PluginError",
    "StageError",
    "StageTimeout",
    "StagecacheError",
]


class StagecacheError(Exception):
    """Base class of every error stagecache raises on purpose."""


class ConfigError(StagecacheError, ValueError):
    """A configuration file or value is invalid.

    The message names the file (when there is one), the field path, the bad value and
    the valid choices or the fix.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.field = field
        prefix = ""
        if path:
            prefix += f"{path}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)


class PluginError(ConfigError):
    """An entry-point plugin could not be loaded or does not have the right shape."""


class InputError(StagecacheError, ValueError):
    """A request that cannot be accepted: malformed messages, bad caller fields."""


class StageError(StagecacheError):
    """A stage failed while running a turn.

    Attributes:
        stage: the name of the stage that failed.
    """

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(f"stage {stage!r}: {message}")


class StageTimeout(StageError, TimeoutError):
    """A stage ran longer than its configured ``timeout_s``."""

    def __init__(self, stage: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(stage, f"timed out after {timeout_s:g} s")


class CacheError(StagecacheError):
    """The cache engine or one of its backends failed."""


class BackendUnavailable(CacheError):
    """A cache backend cannot be reached or cannot write (server down, disk full)."""


class EmbeddingError(StagecacheError):
    """An embedder failed or produced unusable vectors (NaN, wrong dimension)."""


class ModelNotFound(EmbeddingError):
    """The configured embedding model cannot be found or loaded offline."""


class LLMError(StagecacheError):
    """The model client failed: an HTTP error, a timeout or a malformed reply."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)
