"""Latency of the full default pipeline: hit path, own overhead, memory per entry.

    .venv/bin/python benchmarks/latency.py [--entries 1000 100000] [--requests 2000]

Writes benchmarks/results/latency.md. In one run:

1. Hit-path latency (p50/p95/p99) of the seven-stage chain, tracing on, scripted
   LLM, for each embedder (torch fp32, ONNX int8), the embedding cache off so every
   request really embeds.
2. The pipeline's own overhead, excluding embedding and the LLM: the same chain with
   an embedder that returns precomputed vectors (a dict lookup), at 1k and 100k
   entries in the caller's scope, tracing on (real SDK, batch processor, a discarding
   exporter) and off.
3. Memory per entry beyond the answer text (tracemalloc over storing N entries).

The machine is shared and noisy: medians, and ratios measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import stagecache
from stagecache.cache import CacheSettings
from stagecache.config import PipelineConfig, build
from stagecache.testing import ScriptedLLM

RESULTS = Path(__file__).parent / "results" / "latency.md"
ALICE = stagecache.Caller(user_id="alice")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def questions(n: int) -> list[str]:
    """Distinct real questions from the QQP validation split."""
    import csv

    seen: dict[str, None] = {}
    with open(DATA / "qqp_pairs_val.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for q in (row["question1"], row["question2"]):
                if q.strip():
                    seen.setdefault(q.strip(), None)
            if len(seen) >= n:
                break
    return list(seen)[:n]


class TableEmbedder:
    """Precomputed vectors: embedding cost ~0, so only the pipeline is measured."""

    model_id = "table"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dim = next(iter(table.values())).shape[0]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


class DiscardExporter:
    """A span exporter that drops everything (the SDK's cost, not an exporter's)."""

    def export(self, spans: object) -> object:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def tracer_provider() -> object:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardExporter()))  # type: ignore[arg-type]
    return provider


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.3f} | {pct(ms, 95):.3f} | {pct(ms, 99):.3f}"


async def fill(
    pipeline: stagecache.Pipeline, vectors: np.ndarray, texts: list[str]
) -> None:
    """Store ``vectors`` as entries of alice's scope, in bulk, through the engine."""
    from stagecache._model import Message, Turn
    from stagecache.cache import StoreItem
    from stagecache.stages._keys import key_parts

    engine = pipeline.cache.engine
    scope = engine.scope_for(ALICE)
    assert not isinstance(scope, str)
    turn = Turn(
        caller=ALICE, messages=[Message(role="user", content="x")], model="default"
    )
    parts = key_parts(turn, "table", multi_turn=False)
    batch = 2000
    for start in range(0, len(vectors), batch):
        items = [
            StoreItem(
                scope=scope,
                query=texts[i % len(texts)] + f" #{i}",
                vector=vectors[i],
                parts=parts,
                answer="cached answer",
            )
            for i in range(start, min(start + batch, len(vectors)))
        ]
        await engine.store_many(items)


def synthetic(base: np.ndarray, n: int, seed: int = 7) -> np.ndarray:
    """``n`` unit vectors near real ones (real vectors plus small noise)."""
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), n)]
    noisy = picks + rng.normal(0, 0.08, picks.shape).astype(np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


async def overhead(
    base: np.ndarray, texts: list[str], entries: int, requests: int, tracing: bool
) -> list[float]:
    table = {t: base[i] for i, t in enumerate(texts)}
    settings = CacheSettings(
        max_entries_per_user=entries + 10_000, max_total_entries=entries + 10_000
    )
    pipeline = build(
        PipelineConfig(verifier={"kind": "none"}),
        llm=ScriptedLLM(lambda p: "fresh"),
        embedder=TableEmbedder(table),  # type: ignore[arg-type]
        cache=settings,
        tracer_provider=tracer_provider() if tracing else None,  # type: ignore[arg-type]
        tracing=tracing,
    )
    async with pipeline:
        await fill(pipeline, synthetic(base, entries), texts)
        probe = texts[: min(200, len(texts))]
        for q in probe:  # store the probes so every timed request is a hit
            await pipeline.run(q, caller=ALICE)
        times: list[float] = []
        for i in range(requests):
            q = probe[i % len(probe)]
            t0 = time.perf_counter()
            r = await pipeline.run(q, caller=ALICE)
            times.append(time.perf_counter() - t0)
            assert r.cache.hit, r.cache
    return times


async def hit_path(kind: str, texts: list[str], requests: int) -> list[float]:
    config = PipelineConfig(
        embedder={"kind": kind, "cache": False}
        if kind != "onnx"
        else {"kind": "onnx", "quantize": "int8", "cache": False},
    )
    pipeline = build(
        config,
        llm=ScriptedLLM(lambda p: "fresh"),
        tracer_provider=tracer_provider(),  # type: ignore[arg-type]
    )
    async with pipeline:
        probe = texts[:50]
        for q in probe:
            await pipeline.run(q, caller=ALICE)
        times: list[float] = []
        hits = 0
        for i in range(requests):
            t0 = time.perf_counter()
            r = await pipeline.run(probe[i % len(probe)], caller=ALICE)
            times.append(time.perf_counter() - t0)
            hits += r.cache.hit
    print(f"  {kind}: {hits}/{requests} hits", file=sys.stderr)
    return times


def rss_bytes() -> int:
    """Resident set size of this process (hnswlib's C++ memory included)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def memory_per_entry(
    base: np.ndarray, texts: list[str], n: int
) -> tuple[float, float]:
    """(RSS growth per entry, size of the stored query strings per entry)."""
    settings = CacheSettings(max_entries_per_user=n + 10, max_total_entries=n + 10)
    table = {t: base[i] for i, t in enumerate(texts)}
    pipeline = build(
        PipelineConfig(verifier={"kind": "none"}),
        llm=ScriptedLLM(lambda p: "fresh"),
        embedder=TableEmbedder(table),  # type: ignore[arg-type]
        cache=settings,
        tracing=False,
    )
    vectors = synthetic(base, n, seed=11)
    async with pipeline:
        before = rss_bytes()
        await fill(pipeline, vectors, texts)
        after = rss_bytes()
    query_bytes = sum(sys.getsizeof(texts[i % len(texts)] + f" #{i}") for i in range(n))
    return (after - before) / n, query_bytes / n


async def main(args: argparse.Namespace) -> None:
    from stagecache.embeddings import SentenceTransformerEmbedder

    texts = questions(2000)
    embedder = SentenceTransformerEmbedder()
    base = await embedder.embed(texts)
    # First, on a fresh heap: memory freed by later phases would hide the growth.
    per_entry, query_bytes = await memory_per_entry(base, texts, args.memory_entries)
    lines = [
        "# Latency of the full pipeline",
        "",
        f"Measured by `benchmarks/latency.py` on {time.strftime('%Y-%m-%d')}, 2-core "
        "shared machine (other jobs running: figures are medians of one run, compare "
        "ratios within the table).",
        "",
        "## Pipeline's own overhead (embedding and LLM excluded), hit path",
        "",
        "| entries in scope | tracing | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for entries in args.entries:
        for tracing in (True, False):
            times = await overhead(base, texts, entries, args.requests, tracing)
            row = f"| {entries:,} | {'on' if tracing else 'off'} | {summary(times)} |"
            print(row, file=sys.stderr)
            lines.append(row)
    lines += [
        "",
        "## Hit path with each embedder (7 stages, tracing on, no embedding cache)",
        "",
        "| embedder | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for kind in ("sentence_transformers", "onnx"):
        times = await hit_path(kind, texts, args.requests // 4)
        label = "torch fp32" if kind == "sentence_transformers" else "ONNX int8"
        row = f"| {label} | {summary(times)} |"
        print(row, file=sys.stderr)
        lines.append(row)
    lines += [
        "",
        "## Memory per entry",
        "",
        f"RSS growth while storing {args.memory_entries:,} entries in one scope "
        f"(memory backend, hnswlib tier, one shared answer string): "
        f"**{per_entry:,.0f} bytes per entry**, of which the stored query strings "
        f"are {query_bytes:,.0f} bytes; so {per_entry - query_bytes:,.0f} bytes "
        "beyond the texts (the 384-dim float32 vector alone is 1,536 bytes; the "
        "memory backend keeps it only in the index). RSS is coarse: allocator arenas "
        "make it a close upper bound, not an exact figure.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--memory-entries", type=int, default=50_000)
    anyio.run(main, parser.parse_args())
