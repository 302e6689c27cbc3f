"""Embedding benchmarks: latency, throughput, cache hits, micro-batching, cold start.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/embeddings.py`` (about 2-3
minutes). Writes ``benchmarks/results/embeddings.md``. Every figure is the median
over ``--runs`` repetitions; the machine this ran on is shared, so treat the numbers
as indicative.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import numpy as np

from stagecache.embeddings import (
    CachedEmbedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
)
from stagecache.types import Embedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results" / "embeddings.md"
QUERIES = [
    f"How do I {verb} my {thing}? (case {i})"
    for i, (verb, thing) in enumerate(
        (v, t)
        for v in ("reset", "change", "recover", "delete", "update", "export", "share")
        for t in ("password", "account", "invoice", "profile", "API key", "order")
    )
]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def single_latency(embedder: Embedder, n: int) -> tuple[float, float]:
    """p50/p95 in ms of one-text calls with nobody else around."""
    await embedder.embed([QUERIES[0]])
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        await embedder.embed([QUERIES[i % len(QUERIES)]])
        times.append((time.perf_counter() - t0) * 1000)
    return percentile(times, 50), percentile(times, 95)


async def batch_throughput(
    embedder: Embedder, total: int = 256, batch: int = 64
) -> float:
    texts = [QUERIES[i % len(QUERIES)] + f" #{i}" for i in range(total)]
    await embedder.embed(texts[:batch])
    t0 = time.perf_counter()
    for i in range(0, total, batch):
        await embedder.embed(texts[i : i + batch])
    return total / (time.perf_counter() - t0)


async def concurrent_throughput(embedder: Embedder, callers: int, rounds: int) -> float:
    """Texts/s when ``callers`` tasks each send one text at a time, ``rounds`` times."""

    async def caller(k: int) -> None:
        for r in range(rounds):
            await embedder.embed([f"{QUERIES[(k + r) % len(QUERIES)]} c{k} r{r}"])

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for k in range(callers):
            tg.start_soon(caller, k)
    return callers * rounds / (time.perf_counter() - t0)


def cold_start(kind: str, cache_dir: str) -> float:
    """Seconds to import stagecache and load the model, in a fresh interpreter."""
    make = (
        f"SentenceTransformerEmbedder(cache_dir={cache_dir!r})"
        if kind == "torch"
        else f"OnnxEmbedder(quantize='int8', cache_dir={cache_dir!r})"
    )
    code = f"""
import time, anyio
t0 = time.perf_counter()
from stagecache.embeddings import OnnxEmbedder, SentenceTransformerEmbedder
e = {make}
anyio.run(e.embed, ["hello"])
print(time.perf_counter() - t0)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def median(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


async def amedian(fn: Callable[[], Awaitable[float]], runs: int) -> float:
    return statistics.median([await fn() for _ in range(runs)])


async def main(runs: int, n_single: int) -> str:
    cache_dir = os.environ.get("STAGECACHE_CACHE_DIR") or tempfile.mkdtemp()
    rows: list[str] = []
    models: dict[str, Embedder] = {
        "torch fp32 (sentence-transformers)": SentenceTransformerEmbedder(
            cache_dir=cache_dir, batch_window_ms=0
        ),
        "ONNX fp32": OnnxEmbedder(
            quantize="fp32", cache_dir=cache_dir, batch_window_ms=0
        ),
        "ONNX int8": OnnxEmbedder(
            quantize="int8", cache_dir=cache_dir, batch_window_ms=0
        ),
    }
    for name, embedder in models.items():
        await embedder.warm_up()  # type: ignore[attr-defined]
        p50s, p95s = [], []
        for _ in range(runs):
            p50, p95 = await single_latency(embedder, n_single)
            p50s.append(p50)
            p95s.append(p95)
        tput = await amedian(lambda e=embedder: batch_throughput(e), runs)
        rows.append(
            f"| {name} | {statistics.median(p50s):.2f} | {statistics.median(p95s):.2f} "
            f"| {tput:.0f} |"
        )
        print(rows[-1], flush=True)

    cached = CachedEmbedder(models["ONNX int8"])
    await cached.embed(QUERIES)
    hit_p50s, hit_p95s = [], []
    for _ in range(runs):
        times = []
        for i in range(5000):
            t0 = time.perf_counter()
            await cached.embed([QUERIES[i % len(QUERIES)]])
            times.append((time.perf_counter() - t0) * 1000)
        hit_p50s.append(percentile(times, 50))
        hit_p95s.append(percentile(times, 95))
    rows.append(
        f"| cache hit (memory LRU) | {statistics.median(hit_p50s):.4f} | "
        f"{statistics.median(hit_p95s):.4f} | - |"
    )
    print(rows[-1], flush=True)

    # Micro-batching: ONNX int8 with the default adaptive 2 ms window vs none.
    batched = OnnxEmbedder(quantize="int8", cache_dir=cache_dir, batch_window_ms=2.0)
    unbatched = OnnxEmbedder(
        quantize="int8", cache_dir=cache_dir, max_batch=1, batch_window_ms=0
    )
    await batched.warm_up()
    await unbatched.warm_up()
    batch_ref = await amedian(lambda: batch_throughput(batched), runs)
    micro: list[str] = []
    for callers in (1, 8, 64):
        rounds = max(4, 256 // callers)
        with_b = await amedian(
            lambda c=callers, r=rounds: concurrent_throughput(batched, c, r), runs
        )
        without = await amedian(
            lambda c=callers, r=rounds: concurrent_throughput(unbatched, c, r), runs
        )
        micro.append(
            f"| {callers} | {without:.0f} | {with_b:.0f} | {with_b / without:.2f}x "
            f"| {100 * with_b / batch_ref:.0f}% |"
        )
        print(micro[-1], flush=True)

    cold_torch = median(lambda: cold_start("torch", cache_dir), runs)
    cold_onnx = median(lambda: cold_start("onnx", cache_dir), runs)
    colds = [
        f"| torch (sentence-transformers) | {cold_torch:.2f} |",
        f"| ONNX int8 (no torch) | {cold_onnx:.2f} |",
    ]
    print("\n".join(colds), flush=True)

    cpu = platform.processor() or platform.machine()
    return "\n".join(
        [
            "# Embedding benchmarks",
            "",
            f"Produced by `benchmarks/embeddings.py` on {cpu}, "
            f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}. Model: all-MiniLM-L6-v2 (384 dims). "
            f"Each figure is the median of {runs} runs. **The machine is shared with "
            "other jobs and noisy: read the figures as orders of magnitude, not as "
            "precise values.**",
            "",
            "## Single query and batch throughput",
            "",
            f"Single query: {n_single} sequential one-text calls, no micro-batching "
            "window. Batch: 256 texts in calls of 64.",
            "",
            "| embedder | single p50 (ms) | single p95 (ms) | batch (texts/s) |",
            "|---|---:|---:|---:|",
            *rows,
            "",
            "## Micro-batching (ONNX int8)",
            "",
            "N concurrent callers, each sending one text at a time. *Without*: "
            "`max_batch=1` (one model call per text); *with*: the default adaptive "
            "2 ms window (held open only while callers overlap). "
            f"Batch reference: {batch_ref:.0f} texts/s (calls of 64).",
            "",
            "| callers | without (texts/s) | with (texts/s) | gain | of batch |",
            "|---:|---:|---:|---:|---:|",
            *micro,
            "",
            "## Cold start (fresh interpreter: import + load + first embed)",
            "",
            "| embedder | seconds |",
            "|---|---:|",
            *colds,
            "",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--single", type=int, default=100)
    args = parser.parse_args()
    report = anyio.run(main, args.runs, args.single)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report, "utf-8")
    print(f"wrote {RESULTS}")
