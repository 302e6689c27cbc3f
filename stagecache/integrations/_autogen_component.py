"""AutoGen: the component config of ``StagecacheChatCompletionClient``.

``client.dump_component()`` gives a ``ComponentModel`` that
``ChatCompletionClient.load_component(...)`` turns back into an equivalent client:
the inner client's own component config, how to build the pipeline (a TOML file's
path, or the pipeline config itself as a table), the caller, ``read_only_tools``,
the cache control, the model id and the chunk size.

What a config cannot carry is refused with a :class:`~stagecache.errors.ConfigError`
naming the field, never silently dropped: a ``caller_from`` callable, a pipeline
built by hand (pass ``pipeline_config=`` to the constructor), a Redis password in
the pipeline config (keep secrets in the file or the environment: use
``from_config_file``). Objects handed to ``default()`` next to the config (an
embedder instance, a tracer provider) are not part of it: the copy builds what the
config describes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from autogen_core import ComponentModel
from pydantic import BaseModel, Field

from stagecache._cachecontrol import CacheControl, coerce_cache_control
from stagecache._model import Caller
from stagecache.config import PipelineConfig, parse_config
from stagecache.errors import ConfigError

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

    from stagecache.pipeline import Pipeline
    from stagecache.types import LLMClient

__all__ = [
    "CallerConfig",
    "PipelineSource",
    "StagecacheClientConfig",
    "build_pipeline",
    "dump_pipeline",
    "pipeline_of",
    "source_of",
    "to_config",
]


class CallerConfig(BaseModel):
    """A :class:`stagecache.Caller` in a component config."""

    user_id: str | None = None
    session_id: str | None = None
    tenant: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, caller: Caller) -> CallerConfig:
        """The config of ``caller``."""
        return cls(
            user_id=caller.user_id,
            session_id=caller.session_id,
            tenant=caller.tenant,
            metadata=dict(caller.metadata),
        )

    def caller(self) -> Caller:
        """The caller (ids checked as ``Caller`` checks them)."""
        return Caller(
            user_id=self.user_id,
            session_id=self.session_id,
            tenant=self.tenant,
            metadata=dict(self.metadata),
        )


class StagecacheClientConfig(BaseModel):
    """The component config of ``StagecacheChatCompletionClient``.

    Attributes:
        client: the inner client's component config.
        config_file: a pipeline TOML file (read when the client is loaded).
        pipeline: the pipeline config as a table (when there is no file); neither:
            ``Pipeline.default``'s chain with the embedded defaults.
        caller: the identity every call runs as.
        read_only_tools: as for the client.
        model: the model id in cache keys.
        chunk_chars: as for the client.
        cache_control: the client's cache control of every call (field names of
            :class:`stagecache.CacheControl`).
    """

    client: ComponentModel
    config_file: str | None = None
    pipeline: dict[str, Any] | None = None
    caller: CallerConfig | None = None
    read_only_tools: list[str] = Field(default_factory=list)
    model: str | None = None
    chunk_chars: int = 16
    cache_control: dict[str, Any] | None = None


#: How a client's pipeline was built: a TOML file, a config, the defaults (None).
PipelineSource = PipelineConfig | Path | None


def dump_pipeline(source: PipelineSource) -> dict[str, Any]:
    """The ``config_file`` / ``pipeline`` fields for ``source``.

    Raises:
        ConfigError: the config holds a secret (a Redis password).
    """
    if isinstance(source, Path):
        return {"config_file": str(source)}
    if source is None:
        return {}
    if source.cache.backend.redis_password is not None:
        raise ConfigError(
            "a component config would carry the Redis password in clear; put it in "
            "a pipeline file or the environment and build the client with "
            "StagecacheChatCompletionClient.from_config_file(...)",
            field="cache.backend.redis_password",
        )
    table: dict[str, Any] = msgspec.to_builtins(source)
    table.pop("llm", None)  # the AutoGen client is the model
    return {"pipeline": table}


def pipeline_of(config: StagecacheClientConfig) -> PipelineSource:
    """The pipeline source a loaded config names.

    Raises:
        ConfigError: both ``config_file`` and ``pipeline``, a file that does not
            exist, or a bad pipeline table.
    """
    if config.config_file is not None and config.pipeline is not None:
        raise ConfigError(
            "give either config_file or pipeline, not both", field="config_file"
        )
    if config.config_file is not None:
        path = Path(config.config_file)
        if not path.is_file():
            raise ConfigError(
                f"no pipeline file at {config.config_file!r}; point config_file at "
                "an existing TOML file",
                field="config_file",
            )
        return path
    if config.pipeline is not None:
        return parse_config(dict(config.pipeline))
    return None


def source_of(pipeline_options: dict[str, Any]) -> PipelineConfig | None:
    """The config ``Pipeline.default(**pipeline_options)`` builds from."""
    config: PipelineConfig | None = pipeline_options.get("config")
    settings = pipeline_options.get("cache")
    if settings is not None:
        config = msgspec.structs.replace(config or PipelineConfig(), cache=settings)
    return config


def build_pipeline(source: PipelineSource, llm: LLMClient) -> Pipeline:
    """The pipeline ``source`` describes, around ``llm``."""
    from stagecache.pipeline import Pipeline

    if isinstance(source, Path):
        return Pipeline.load(source, llm=llm)
    return Pipeline.default(llm=llm, config=source)


def to_config(
    inner: ChatCompletionClient,
    source: PipelineSource | Literal[False],
    *,
    caller: Caller | None,
    caller_from: object,
    read_only_tools: Collection[str],
    model: str,
    chunk_chars: int,
    cache_control: CacheControl | Mapping[str, Any] | None,
) -> StagecacheClientConfig:
    """The component config of a client with these parts.

    Args:
        inner: the inner client (dumped with its own ``dump_component``).
        source: how the pipeline was built; False: unknown (built by hand).
        caller: the fixed caller.
        caller_from: the caller callable, if any (refused).
        read_only_tools: as for the client.
        model: as for the client.
        chunk_chars: as for the client.
        cache_control: as for the client.

    Raises:
        ConfigError: ``caller_from`` is set, the pipeline's config is unknown, or
            it holds a Redis password.
    """
    if caller_from is not None:
        raise ConfigError(
            "a callable cannot be dumped to a component config; dump a client "
            "with a fixed caller= and set caller_from on the loaded copy",
            field="caller_from",
        )
    if source is False:
        raise ConfigError(
            "the pipeline was built by hand; pass pipeline_config= (its TOML "
            "file or PipelineConfig) to the constructor, or use default() / "
            "from_config_file()",
            field="pipeline_config",
        )
    control = coerce_cache_control(cache_control)
    return StagecacheClientConfig(
        client=inner.dump_component(),
        cache_control=None if control is None else msgspec.to_builtins(control),
        caller=None if caller is None else CallerConfig.of(caller),
        read_only_tools=sorted(read_only_tools),
        model=model,
        chunk_chars=chunk_chars,
        **dump_pipeline(source),
    )
