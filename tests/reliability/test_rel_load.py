"""Load: 1,000 concurrent requests from 10,000 simulated users, then paraphrased
follow-ups, on asyncio and trio, memory and sqlite backends.

Vectors are real MiniLM vectors, computed once per module for the fixed set of
questions and paraphrases and served by a table embedder (embedding 2,500 requests
one by one on 2 CPU cores would dominate the run). Every answer names its user, so
a cross-user answer is a string check.

With ``STAGECACHE_WRITE_RESULTS=1`` each run writes its figures (p50/p99 latency,
peak traced memory) to ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import os
import re
import time
import tracemalloc
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np
import pytest
from rel_helpers import TableEmbedder, UserLLM

import stagecache
from stagecache.cache import BackendSettings, CacheSettings
from stagecache.config import DEFAULT_STAGES, PipelineConfig, build

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PAIRS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is your refund policy?", "What is the refund policy?"),
    ("How do I cancel my subscription?", "How can I cancel my subscription?"),
    ("Where can I download my invoices?", "Where do I download my invoices?"),
    ("How do I change my email address?", "How can I change my email address?"),
    ("What payment methods do you accept?", "Which payment methods do you accept?"),
    ("How do I delete my account?", "How can I delete my account?"),
    ("Is there a free trial?", "Do you offer a free trial?"),
    ("How do I contact support?", "How can I contact customer support?"),
    ("Can I change my username?", "Is it possible to change my username?"),
    ("How long does shipping take?", "How long does delivery take?"),
    ("Do you ship internationally?", "Do you ship to other countries?"),
    ("How do I enable two-factor authentication?", "How do I turn on 2FA?"),
    ("What are your opening hours?", "When are you open?"),
    ("How do I update my billing address?", "How can I update my billing address?"),
    ("Can I pause my subscription?", "Is it possible to pause my subscription?"),
    ("How do I export my data?", "How can I export my data?"),
    ("Why was my card declined?", "Why did my card get declined?"),
    ("How do I add a team member?", "How can I add a member to my team?"),
    ("What is the maximum file size?", "What is the largest file I can upload?"),
]
N_USERS, N_ACTIVE, N_DUPES, N_STRANGERS = 10_000, 1_000, 100, 500
USER_ID = re.compile(r"user-\d{5}")
RESULTS = Path(__file__).parents[2] / "benchmarks" / "results" / "reliability.md"


def redis_supported() -> bool:
    info = msgspec.inspect.type_info(BackendSettings)
    kind = next(f for f in info.fields if f.name == "kind").type  # type: ignore[attr-defined]
    return "redis" in getattr(kind, "values", ())


def _redis_listening() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.3).close()
        return True
    except OSError:
        return False


BACKENDS = [
    "memory",
    "sqlite",
    pytest.param(
        "redis",
        marks=[
            pytest.mark.redis,
            pytest.mark.skipif(
                not redis_supported(), reason="no redis backend in BackendSettings yet"
            ),
            # Finding F7 (fixed: a blocking connection pool) made 1,000 concurrent
            # lookups fail with "Too many connections"; this now runs when a
            # redis-server listens (tasks.py starts one for the test suite).
            pytest.mark.skipif(not _redis_listening(), reason="no redis on :6379"),
        ],
    ),
]


@pytest.fixture(scope="module")
def table(minilm: Any) -> TableEmbedder:
    texts = [t for pair in PAIRS for t in pair]
    vectors = anyio.run(minilm.embed, texts)
    return TableEmbedder(
        dict(zip(texts, vectors, strict=True)), model_id=minilm.model_id
    )


def backend_settings(kind: str, tmp_path: Path) -> BackendSettings:
    if kind == "sqlite":
        return BackendSettings(kind="sqlite", path=str(tmp_path / "load.db"))
    # A namespace of its own: a redis server may hold other runs' entries.
    return BackendSettings(kind=kind, redis_namespace=f"sc-load-{uuid.uuid4().hex}")  # type: ignore[arg-type, call-arg]


async def gather(
    calls: list[tuple[str, str]], pipeline: stagecache.Pipeline
) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int, user: str, text: str) -> None:
        results[i] = await pipeline.run(text, caller=stagecache.Caller(user_id=user))

    async with anyio.create_task_group() as tg:
        for i, (user, text) in enumerate(calls):
            tg.start_soon(one, i, user, text)
    return results


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_users_get_only_their_own_answers_and_nothing_is_lost(
    table: TableEmbedder, tmp_path: Path, backend: str, anyio_backend: str
) -> None:
    if backend == "redis" and anyio_backend != "asyncio":
        pytest.skip("the redis backend runs on asyncio only (redis.asyncio)")
    rng = np.random.default_rng(0)
    users = [f"user-{i:05d}" for i in range(N_USERS)]
    order = rng.permutation(N_USERS)
    active = [users[i] for i in order[:N_ACTIVE]]
    strangers = [users[i] for i in order[N_ACTIVE : N_ACTIVE + N_STRANGERS]]
    asks = {u: PAIRS[i % len(PAIRS)] for i, u in enumerate(active)}
    first = [(u, asks[u][0]) for u in active] + [
        (u, asks[u][0]) for u in active[:N_DUPES]
    ]
    follow = [(u, asks[u][1]) for u in active]
    follow += [(u, PAIRS[i % len(PAIRS)][1]) for i, u in enumerate(strangers)]

    # timeout_s: raised for this correctness test. Stores are group-committed
    # (finding F6), but whether a 1,000-request burst fits the 1 s default depends
    # on the machine's load (see docs/reliability.md, F6); a test must not.
    limit = {"timeout_s": 60.0}
    settings = CacheSettings(backend=backend_settings(backend, tmp_path), **limit)
    # The same for the cache_check stage's own 2 s limit: the burst queues lookups
    # behind each other, and this test is about correctness, not latency.
    stages = [
        {"kind": k, "timeout_s": 60.0} if k == "cache_check" else {"kind": k}
        for k in DEFAULT_STAGES
    ]
    pipeline = build(
        PipelineConfig(stages=stages),
        llm=UserLLM(delay_s=0.02),
        embedder=table,
        cache=settings,
    )
    tracing = os.environ.get("STAGECACHE_WRITE_RESULTS") == "1"
    if tracing:
        tracemalloc.start()
    started = time.perf_counter()
    async with pipeline:
        a = await gather(first, pipeline)
        b = await gather(follow, pipeline)
        wall = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if tracing else 0
        if tracing:
            tracemalloc.stop()
        engine = pipeline.cache.engine
        entries = [e async for batch in engine.backend.scan() for e in batch]
        stored_ids = {r.cache.entry_id for r in a + b if r.cache.stored}
        found = await engine.backend.get_many(sorted(stored_ids))
        assert engine.stats()["entries"] == await engine.backend.count()
        await engine.clear()

    for (user, _), result in zip(first + follow, a + b, strict=True):
        assert USER_ID.findall(result.answer) == [user], (user, result.answer)
    assert set(found) == stored_ids  # no lost store
    assert len(entries) == len(stored_ids)
    assert max(Counter((e.user_id, e.query) for e in entries).values()) == 1
    per_user = Counter(
        e.user_id for e in entries if e.query == asks.get(e.user_id or "", ("",))[0]
    )
    assert set(per_user.values()) == {1} and len(per_user) == N_ACTIVE
    sims = {p: float(table.table[p[0]] @ table.table[p[1]]) for p in PAIRS}
    for (user, _), result in zip(follow[:N_ACTIVE], b[:N_ACTIVE], strict=True):
        # A hit needs the threshold (and the verifier's yes); a miss is stored.
        assert result.cache.hit <= (sims[asks[user]] >= (result.cache.threshold or 0))
        assert result.cache.hit or result.cache.stored
    assert not any(r.cache.hit for r in b[N_ACTIVE:])  # strangers share no scope

    if tracing:
        write_figures(
            f"{backend} / {anyio_backend}",
            misses=[r.latency_s for r in a if not r.cache.hit],
            hits=[r.latency_s for r in b if r.cache.hit],
            requests=len(a) + len(b),
            wall=wall,
            peak=peak,
            hit_rate=sum(r.cache.hit for r in b[:N_ACTIVE]) / N_ACTIVE,
        )


def write_figures(
    key: str,
    *,
    misses: list[float],
    hits: list[float],
    requests: int,
    wall: float,
    peak: int,
    hit_rate: float,
) -> None:
    row = (
        f"| {key} | {requests} | {wall:.2f} | {percentile(misses, 50):.1f} | "
        f"{percentile(misses, 99):.1f} | {percentile(hits, 50):.1f} | "
        f"{percentile(hits, 99):.1f} | {hit_rate:.0%} | {peak / 2**20:.1f} |"
    )
    begin, end = "<!-- load:begin -->", "<!-- load:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else f"{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    body, tail = rest.split(end, 1)
    rows = [
        x
        for x in body.strip().splitlines()
        if x.startswith("| ") and " / " in x and not x.startswith("| backend")
    ]
    rows = sorted([x for x in rows if not x.startswith(f"| {key} |")] + [row])
    header = (
        "| backend / loop | requests | wall s | miss p50 ms | miss p99 ms | "
        "hit p50 ms | hit p99 ms | paraphrase hit rate | peak traced MiB |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    RESULTS.write_text(
        f"{head}{begin}\n{header}\n" + "\n".join(rows) + f"\n{end}{tail}"
    )
