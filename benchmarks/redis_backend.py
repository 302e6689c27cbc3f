"""Redis backend benchmark: hit-path latency, cross-worker visibility, throughput.

Usage: ``python benchmarks/redis_backend.py [--url redis://127.0.0.1:6379/0]``.
Writes nothing to Redis outside a random namespace, which it deletes afterwards.

1. Hit path: ``SemanticCache.lookup`` of a stored entry (one scope of 1,000
   entries, 384-d vectors), memory backend vs redis backend, in the same run.
2. Visibility: worker A (this process) stores an entry; worker B (a second
   process) polls ``lookup`` every 0.2 ms until it hits. Delay = B's hit time -
   A's store return time (``time.monotonic`` is system-wide on Linux).
3. Throughput: 2 worker processes, each running 16 concurrent clients for a fixed
   time, 90 % lookups of stored entries (hits) and 10 % stores of new ones.

Prints a Markdown table (the content of ``benchmarks/results/redis.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid

import numpy as np

from stagecache._model import Caller
from stagecache.cache import (
    CacheSettings,
    KeyParts,
    MemoryBackend,
    RedisBackend,
    SemanticCache,
)

PARTS = KeyParts("model", "instructions", "context")
DIM = 384


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """A worker process running ``script`` (stdin/stdout are line pipes)."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def hit_path(url: str, namespace: str, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("memory", "redis"):
        backend = (
            MemoryBackend()
            if name == "memory"
            else RedisBackend(url, namespace=namespace)
        )
        cache = SemanticCache(CacheSettings(), backend=backend)
        async with cache:
            scope = cache.scope_for(Caller(user_id="bench"))
            assert not isinstance(scope, str)
            for i in range(1000):
                await cache.store(scope, f"q{i}", unit(i), PARTS, f"answer {i}")
            times = []
            for j in range(n):
                i = j % 1000
                t = time.perf_counter()
                found = await cache.lookup(scope, unit(i), PARTS, f"q{i}")
                times.append(time.perf_counter() - t)
                assert found.hit is not None
            out[f"{name}_p50_ms"] = pct(times, 50) * 1000
            out[f"{name}_p99_ms"] = pct(times, 99) * 1000
            if name == "redis":
                await cache.clear()
    out["added_p50_ms"] = out["redis_p50_ms"] - out["memory_p50_ms"]
    return out


WATCHER = """
import asyncio, json, sys, time
import numpy as np
from stagecache._model import Caller
from stagecache.cache import CacheSettings, KeyParts, RedisBackend, SemanticCache
url, ns, n, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
PARTS = KeyParts("model", "instructions", "context")
def unit(seed):
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)
async def main():
    cache = SemanticCache(CacheSettings(), backend=RedisBackend(url, namespace=ns))
    async with cache:
        scope = cache.scope_for(Caller(user_id="vis"))
        print("ready", flush=True)
        seen = []
        for i in range(n):
            v = unit(base + i)
            while True:
                found = await cache.lookup(scope, v, PARTS, "q")
                if found.hit is not None:
                    seen.append(time.monotonic())
                    break
                await asyncio.sleep(0.0002)
        print(json.dumps(seen), flush=True)
asyncio.run(main())
"""


async def visibility(url: str, namespace: str, n: int) -> dict[str, float]:
    base = 500_000
    proc = spawn(WATCHER, url, namespace, str(n), str(base))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    cache = SemanticCache(
        CacheSettings(), backend=RedisBackend(url, namespace=namespace)
    )
    stored = []
    async with cache:
        scope = cache.scope_for(Caller(user_id="vis"))
        assert not isinstance(scope, str)
        for i in range(n):
            await cache.store(scope, f"v{i}", unit(base + i), PARTS, f"a{i}")
            stored.append(time.monotonic())
            await asyncio.sleep(0.02)
        seen = json.loads(proc.stdout.readline())
        proc.wait()
        await cache.clear()
    delays = [(s - t) * 1000 for s, t in zip(seen, stored, strict=True)]
    return {"p50_ms": pct(delays, 50), "p99_ms": pct(delays, 99), "max_ms": max(delays)}


LOADER = """
import asyncio, json, random, sys, time
import numpy as np
from stagecache._model import Caller
from stagecache.cache import CacheSettings, KeyParts, RedisBackend, SemanticCache
url, ns = sys.argv[1], sys.argv[2]
worker, seconds = int(sys.argv[3]), float(sys.argv[4])
PARTS = KeyParts("model", "instructions", "context")
def unit(seed):
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)
VECS = [unit(i) for i in range(500)]
async def main():
    cache = SemanticCache(CacheSettings(), backend=RedisBackend(url, namespace=ns))
    async with cache:
        print("ready", flush=True)
        sys.stdin.readline()
        counts = {"lookup": 0, "hit": 0, "store": 0}
        end = time.monotonic() + seconds
        async def client(c):
            rnd = random.Random(worker * 100 + c)
            k = 0
            while time.monotonic() < end:
                user = f"u{rnd.randrange(10)}"
                scope = cache.scope_for(Caller(user_id=user))
                if rnd.random() < 0.1:
                    k += 1
                    seed = 1_000_000 + worker * 100_000 + c * 10_000 + k
                    await cache.store(scope, f"s{seed}", unit(seed), PARTS, "x")
                    counts["store"] += 1
                else:
                    i = rnd.randrange(50)
                    found = await cache.lookup(scope, VECS[i], PARTS, "q")
                    counts["lookup"] += 1
                    counts["hit"] += found.hit is not None
        await asyncio.gather(*(client(c) for c in range(16)))
        print(json.dumps(counts), flush=True)
asyncio.run(main())
"""


async def throughput(url: str, namespace: str, seconds: float) -> dict[str, float]:
    seed_cache = SemanticCache(
        CacheSettings(), backend=RedisBackend(url, namespace=namespace)
    )
    async with seed_cache:  # 10 users x 50 entries, the lookups' targets
        for u in range(10):
            scope = seed_cache.scope_for(Caller(user_id=f"u{u}"))
            assert not isinstance(scope, str)
            for i in range(50):
                await seed_cache.store(scope, f"q{i}", unit(i), PARTS, f"a{i}")
    procs = [spawn(LOADER, url, namespace, str(w), str(seconds)) for w in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    counts = []
    for p in procs:
        assert p.stdout is not None
        counts.append(json.loads(p.stdout.readline()))
        p.wait()
    ops = sum(c["lookup"] + c["store"] for c in counts)
    lookups = sum(c["lookup"] for c in counts)
    hits = sum(c["hit"] for c in counts)
    return {
        "ops_per_s": ops / seconds,
        "per_worker": [round((c["lookup"] + c["store"]) / seconds) for c in counts],
        "hit_rate": hits / max(1, lookups),
    }  # type: ignore[dict-item]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--lookups", type=int, default=5000)
    parser.add_argument("--visible", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        hit = await hit_path(args.url, namespace + "h", args.lookups)
        vis = await visibility(args.url, namespace + "v", args.visible)
        thr = await throughput(args.url, namespace + "t", args.seconds)
    finally:
        import redis

        raw = redis.Redis.from_url(args.url)
        for ns in ("h", "v", "t"):
            keys = list(raw.scan_iter(match=f"{namespace}{ns}:*", count=1000))
            if keys:
                raw.delete(*keys)
        raw.close()
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| hit p50, memory backend | {hit['memory_p50_ms']:.3f} ms | |")
    print(f"| hit p50, redis backend | {hit['redis_p50_ms']:.3f} ms | |")
    print(f"| hit p99, memory / redis | {hit['memory_p99_ms']:.3f} / "
          f"{hit['redis_p99_ms']:.3f} ms | |")  # fmt: skip
    print(f"| redis adds to a hit (p50) | {hit['added_p50_ms']:.3f} ms | <= 1 ms |")
    print(f"| store -> visible on other worker p50 | {vis['p50_ms']:.2f} ms | |")
    print(f"| store -> visible on other worker p99 | {vis['p99_ms']:.2f} ms "
          "| < 50 ms |")  # fmt: skip
    print(f"| store -> visible, max | {vis['max_ms']:.2f} ms | |")
    print(f"| throughput, 2 workers x 16 clients (90 % hits, 10 % stores) | "
          f"{thr['ops_per_s']:.0f} ops/s (per worker {thr['per_worker']}, hit rate "
          f"{thr['hit_rate']:.2f}) | |")  # fmt: skip
    print(f"\n{statistics.__name__} run: {args.lookups} lookups, {args.visible} "
          f"visibility samples, {args.seconds:.0f} s of load")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
