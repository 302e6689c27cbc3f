"""Opening a configured cache for operator commands, without the embedding model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from stagecache.errors import ConfigError
from stagecache.pipeline._cacheapi import CacheAPI

__all__ = ["open_cache"]


@asynccontextmanager
async def open_cache(
    config: str, *, persistent: bool = True
) -> AsyncIterator[CacheAPI]:
    """The cache of the pipeline file ``config``, opened alone (no model loaded).

    Args:
        config: the pipeline TOML file.
        persistent: refuse a memory backend (it holds nothing in a new process).

    Raises:
        ConfigError: a bad file, or a memory backend where ``persistent``.
    """
    import stagecache
    from stagecache.testing import ScriptedLLM

    pipeline = stagecache.load(config, llm=ScriptedLLM(lambda p: "", delay_s=0))
    api = pipeline.cache
    kind = api.engine.settings.backend.kind
    if persistent and kind == "memory":
        raise ConfigError(
            "the memory backend keeps nothing between processes, so a new process "
            'finds it empty; use kind = "sqlite" or "redis"',
            path=config,
            field="cache.backend.kind",
        )
    await api.open_store()
    try:
        yield api
    finally:
        await api.close_store()
