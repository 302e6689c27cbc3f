"""Whole pipelines on the redis backend: two workers, Redis killed mid-run."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Sequence

import numpy as np
import pytest

from stagecache import Caller
from stagecache.cache import BackendSettings, CacheSettings, RedisBackend
from stagecache.config import PipelineConfig, build
from stagecache.testing import ScriptedLLM

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


class HashEmbedder:
    """Identical texts get identical unit vectors (no model to load)."""

    model_id = "hash-embedder"
    dim = 384

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


def answer(prompt: str) -> str:
    return f"answer to: {prompt}"


def pipeline(url: str, namespace: str, **backend: object):
    settings = CacheSettings(
        timeout_s=0.5,
        backend=BackendSettings(
            kind="redis", redis_url=url, redis_namespace=namespace, **backend
        ),
    )
    llm = ScriptedLLM(answer)
    return build(PipelineConfig(cache=settings), llm=llm, embedder=HashEmbedder()), llm


async def test_a_store_on_one_pipeline_is_a_hit_on_another(redis_url, namespace):
    one, llm_one = pipeline(redis_url, namespace)
    two, llm_two = pipeline(redis_url, namespace)
    alice = Caller(user_id="alice")
    async with one, two:
        first = await one.run("How do I rotate my API key?", caller=alice)
        assert first.cache.status == "miss" and first.cache.stored
        deadline = time.monotonic() + 10
        while True:
            await two.cache.engine.apply_changes()
            if two.cache.stats()["entries"] == 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        second = await two.run("How do I rotate my API key?", caller=alice)
        assert second.cache.hit and second.answer == first.answer
        assert llm_two.calls == 0
        # A writing tool call on worker two invalidates alice's scope everywhere.
        assert await two.cache.invalidate(alice) == 1
        third = await one.run("How do I rotate my API key?", caller=alice)
        assert not third.cache.hit and llm_one.calls == 2


async def test_redis_killed_mid_run_every_request_is_answered(private_redis, namespace):
    pipe, llm = pipeline(private_redis.url, namespace)
    questions = [f"question number {i}" for i in range(20)]
    results = []
    async with pipe:
        for i in range(200):
            if i == 70:
                private_redis.kill()
            if i == 130:
                private_redis.start()  # empty, like a restarted cache server
                backend = pipe.cache.engine.backend
                assert isinstance(backend, RedisBackend)
                deadline = time.monotonic() + 10
                while True:
                    if backend.resyncs >= 1 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.02)
            caller = Caller(user_id=f"user{i % 3}")
            result = await pipe.run(questions[i % 20], caller=caller)
            results.append(result)
    assert all(r.answer == answer(questions[i % 20]) for i, r in enumerate(results))
    statuses = [r.cache.status for r in results]
    before, during, after = statuses[:70], statuses[70:130], statuses[130:]
    assert "hit" in before and "error" not in before
    errors = sum(
        1 for r in results[70:130] if any(e.startswith("cache.") for e in r.errors)
    )
    assert errors > 0 and "hit" not in during
    assert "hit" in after[60:]  # the cache works again, without a restart
    assert llm.calls == sum(1 for s in statuses if s != "hit")


async def test_encrypted_pipeline_round_trip(redis_url, namespace, raw, monkeypatch):
    monkeypatch.setenv("STAGECACHE_CACHE_KEY", base64.b64encode(b"k" * 32).decode())
    pipe, llm = pipeline(redis_url, namespace, encrypt_values=True)
    bob = Caller(user_id="bob")
    async with pipe:
        # No PII in the answer: a redacted answer is never stored (docs/security.md).
        first = await pipe.run("is my locker word PELICAN-7731?", caller=bob)
        again = await pipe.run("is my locker word PELICAN-7731?", caller=bob)
    assert again.cache.hit and again.answer == first.answer and llm.calls == 1
    dump = b"".join(
        b"".join(k + v for k, v in raw.hgetall(key).items())
        for key in raw.scan_iter(match=f"{namespace}:e:*")
    )
    assert dump and b"PELICAN" not in dump and b"answer to" not in dump
