"""LangChain's own standard cache suites (``langchain-tests``), run against the cache.

The suites ask for an EMPTY cache per test; each test here gets a fresh one with a
fixed caller (a cache without one refuses to be built: see test_int_langchain.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests.cache import (
    AsyncCacheTestSuite,
    SyncCacheTestSuite,
)

import stagecache
from stagecache.integrations.langchain import StagecacheLangChainCache


class TestStagecacheSyncCache(SyncCacheTestSuite):
    @pytest.fixture
    def cache(
        self, pipeline_options: dict[str, Any]
    ) -> Iterator[StagecacheLangChainCache]:
        cache = StagecacheLangChainCache(
            caller=stagecache.Caller(user_id="standard-sync"), **pipeline_options
        )
        yield cache
        cache.close()


@pytest.mark.anyio
class TestStagecacheAsyncCache(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(
        self, pipeline_options: dict[str, Any]
    ) -> AsyncIterator[StagecacheLangChainCache]:
        cache = StagecacheLangChainCache(
            caller=stagecache.Caller(user_id="standard-async"), **pipeline_options
        )
        yield cache
        cache.close()
