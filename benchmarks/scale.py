"""Scale of the cache engine: memory, lookup latency and start-up vs entries/scopes.

    .venv/bin/python benchmarks/scale.py [--sizes 10000:100 100000:1000 \\
        1000000:10000] [--shared-fraction 0.1] [--scope-sweep 100000:100,1000,10000]

Writes benchmarks/results/scale.md and benchmarks/results/scale.png. Each size is
``ENTRIES:SCOPES``: ENTRIES per-user entries spread evenly over SCOPES per-user
scopes, plus one shared scope holding ``shared-fraction`` x ENTRIES more (the
headline size, 1,000,000:10,000, has 1,000,000 entries in 10,000 scopes of 100
plus a shared scope of 100,000). Every size runs in fresh processes:

1. fill: writes the entries to a SQLite file in a temporary directory. The
   smallest size goes through ``SemanticCache.store_many`` (batches of 2,000, the
   engine's bulk API, which writes entry by entry); bigger ones write the same
   rows with ``SqliteBackend.put_many`` (10,000 rows a transaction), because
   ``store_many``'s per-entry commits would take minutes per million entries.
2. load: a fresh engine ``warm_up()``s from that file (the start-up time) and the
   RSS it added, and its peak, are read from /proc; then lookups: p50/p99 of
   ``lookup`` on hits in random per-user scopes (flat indexes) and in the shared
   scope (hnswlib past ``flat_max_entries``). ``aclose()`` saves the hnswlib
   indexes to ``index_dir`` and a second fresh engine warms up from the file plus
   the saved indexes.

Vectors: the cached all-MiniLM-L6-v2 vectors of the shared data
(``benchmarks/.cache/emb.npz``, ~42,000 real sentences; nothing is re-embedded),
each entry a copy of one plus Gaussian noise (sigma 0.02 per dimension, cosine
about 0.93 to its source), renormalised. Queries are stored entries plus sigma
0.005 noise (cosine about 0.995: hits).

The machine is shared (2 cores, other engineers' jobs): one run, medians.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import linecache
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import anyio
import numpy as np

from stagecache._model import Caller
from stagecache.cache import (
    BackendSettings,
    CacheSettings,
    Entry,
    KeyParts,
    Scope,
    SemanticCache,
    SqliteBackend,
    StoreItem,
    resolve_scope,
)

ROOT = Path(__file__).resolve().parent.parent
EMB = ROOT / "benchmarks" / ".cache" / "emb.npz"
RESULTS = ROOT / "benchmarks" / "results"
DIM = 384
NOISE = 0.02
QUERY_NOISE = 0.005
BATCH = 10_000
PARTS = KeyParts("gpt-4o-mini", "instr-hash-0001", "ctx-fp-0001")
ANSWER = "A cached answer of a typical short length, about one sentence long."
BIG = 10**9


def rss() -> tuple[float, float]:
    """(current, peak) resident set size in MiB, from /proc/self/status."""
    found: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(line.split()[1]) / 1024
    return found["VmRSS"], found["VmHWM"]


def settings(path: Path, index_dir: Path | None = None) -> CacheSettings:
    return CacheSettings(
        max_entries_per_user=BIG,
        max_total_entries=BIG,
        default_ttl=30 * 86400,
        index_dir=str(index_dir) if index_dir else None,
        backend=BackendSettings(kind="sqlite", path=str(path)),
    )


def shared_scope() -> Scope:
    s = CacheSettings(scope="shared", shared_data_acknowledged=True)
    scope = resolve_scope(s, Caller(user_id="shared-writer"))
    assert isinstance(scope, Scope)
    return scope


def user_scope(i: int) -> Scope:
    scope = resolve_scope(CacheSettings(), Caller(user_id=f"user-{i:06d}"))
    assert isinstance(scope, Scope)
    return scope


class Layout:
    """Which scope entry ``i`` goes to: per-user entries first, then shared."""

    def __init__(self, entries: int, scopes: int, shared: int) -> None:
        self.entries, self.scopes, self.shared = entries, scopes, shared
        self.total = entries + shared

    def scope_index(self, i: int) -> int:
        """-1 for the shared scope, else the per-user scope number."""
        return i % self.scopes if i < self.entries else -1


def vectors(base: np.ndarray, lo: int, hi: int, seed: int) -> np.ndarray:
    """Rows ``lo..hi`` of the synthetic set (deterministic per row block)."""
    rng = np.random.default_rng([seed, lo])
    picks = base[rng.integers(0, len(base), hi - lo)]
    noisy = picks + rng.normal(0, NOISE, picks.shape).astype(np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def load_base() -> np.ndarray:
    z = np.load(EMB)
    return np.ascontiguousarray(z["vecs"], dtype=np.float32)


# -- child process: fill -------------------------------------------------------------


async def fill(args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.entries, args.scopes, args.shared)
    base = load_base()
    db = Path(args.db)
    scopes = [user_scope(i) for i in range(layout.scopes)]
    shared = shared_scope()
    t0 = time.perf_counter()
    if args.engine_fill:
        engine = SemanticCache(settings(db), dim=DIM)
        async with engine:
            for lo in range(0, layout.total, BATCH):
                hi = min(lo + BATCH, layout.total)
                vecs = vectors(base, lo, hi, args.seed)
                for start in range(lo, hi, 2000):
                    items = []
                    for i in range(start, min(start + 2000, hi)):
                        k = layout.scope_index(i)
                        items.append(
                            StoreItem(
                                scope=scopes[k] if k >= 0 else shared,
                                query=f"synthetic question {i}",
                                vector=vecs[i - lo],
                                parts=PARTS,
                                answer=ANSWER,
                            )
                        )
                    await engine.store_many(items)
            stored = engine.stats()["entries"]
        how = "store_many"
    else:
        backend = SqliteBackend(db)
        await backend.open()
        now = time.time()
        for lo in range(0, layout.total, BATCH):
            hi = min(lo + BATCH, layout.total)
            vecs = vectors(base, lo, hi, args.seed)
            rows = []
            for j, i in enumerate(range(lo, hi)):
                k = layout.scope_index(i)
                scope = scopes[k] if k >= 0 else shared
                rows.append(
                    Entry(
                        entry_id=f"{i:016x}",
                        scope_key=scope.key,
                        scope_mode=scope.mode,
                        user_id=scope.user_id,
                        query=f"synthetic question {i}",
                        answer=ANSWER,
                        parts=PARTS,
                        vector=vecs[j].tobytes(),
                        created_at=now,
                        expires_at=now + 30 * 86400,
                        last_used=now,
                    )
                )
            await backend.put_many(rows)
        stored = await backend.count()
        await backend.aclose()
        how = "SqliteBackend.put_many"
    elapsed = time.perf_counter() - t0
    return {
        "fill_s": elapsed,
        "fill_us_per_entry": elapsed / layout.total * 1e6,
        "fill_how": how,
        "stored": stored,
    }


# -- child process: load, measure, restart with saved indexes ------------------------


async def timed_lookups(
    engine: SemanticCache,
    base: np.ndarray,
    layout: Layout,
    seed: int,
    n: int,
    shared: bool,
) -> tuple[list[float], int]:
    rng = np.random.default_rng(seed + 99)
    if shared:
        rows = rng.integers(layout.entries, layout.total, n)
    else:
        rows = rng.integers(0, layout.entries, n)
    scopes = {k: user_scope(k) for k in {layout.scope_index(int(i)) for i in rows}}
    shared_s = shared_scope()
    # Regenerate the stored vectors of the sampled rows (one block at a time,
    # before the timing starts) and perturb them slightly.
    blocks: dict[int, np.ndarray] = {}
    queries = []
    for i in rows.tolist():
        lo = i // BATCH * BATCH
        if lo not in blocks:
            blocks[lo] = vectors(base, lo, min(lo + BATCH, layout.total), seed)
        q = blocks[lo][i - lo] + rng.normal(0, QUERY_NOISE, DIM).astype(np.float32)
        queries.append((i, q / np.linalg.norm(q)))
    blocks.clear()
    times: list[float] = []
    hits = 0
    for i, q in queries:
        k = layout.scope_index(i)
        scope = scopes[k] if k >= 0 else shared_s
        t0 = time.perf_counter()
        found = await engine.lookup(scope, q, PARTS, f"synthetic question {i}?")
        times.append(time.perf_counter() - t0)
        hits += found.hit is not None
    return times, hits


def trace_top(snap: tracemalloc.Snapshot, entries: int) -> list[list[Any]]:
    """Live allocations after warm-up by source line: [where, bytes per entry]."""
    keep = tracemalloc.Filter(True, "*stagecache*")
    stats = snap.filter_traces([keep]).statistics("lineno")
    total = snap.statistics("filename")
    rows: list[list[Any]] = []
    for st in stats[:12]:
        frame = st.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        rows.append(
            [
                where,
                st.size / entries,
                linecache.getline(frame.filename, frame.lineno).strip(),
            ]
        )
    rows.append(["all traced", sum(t.size for t in total) / entries, ""])
    return rows


async def load(args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.entries, args.scopes, args.shared)
    base = load_base()
    db = Path(args.db)
    index_dir = db.parent / "indexes"
    gc.collect()
    rss0, _ = rss()
    engine = SemanticCache(settings(db, index_dir), dim=DIM)
    if args.trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    await engine.warm_up()
    warm_s = time.perf_counter() - t0
    gc.collect()
    rss1, peak = rss()
    stats = engine.stats()
    if args.trace:
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        await engine.aclose()
        return {"trace": trace_top(snap, stats["entries"]), "rss_mib": rss1 - rss0}
    # How much of that RSS is the allocator holding freed memory (warm-up's
    # transient rows) rather than live data: give free pages back and re-read.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    rss_trim, _ = rss()
    out: dict[str, Any] = {
        "warm_s": warm_s,
        "rss_trim_mib": rss_trim - rss0,
        "rss_mib": rss1 - rss0,
        "peak_mib": peak - rss0,
        "bytes_per_entry": (rss1 - rss0) * 2**20 / stats["entries"],
        "stats": stats,
    }
    kinds = [("user", False)] + ([("shared", True)] if layout.shared else [])
    for name, shared in kinds:
        times, hits = await timed_lookups(
            engine, base, layout, args.seed, args.lookups, shared
        )
        ms = sorted(t * 1000 for t in times)
        out[f"{name}_p50_ms"] = statistics.median(ms)
        out[f"{name}_p99_ms"] = float(np.percentile(ms, 99))
        out[f"{name}_hits"] = hits
        out[f"{name}_n"] = len(ms)
    t0 = time.perf_counter()
    await engine.aclose()
    out["close_save_s"] = time.perf_counter() - t0
    del engine
    gc.collect()
    again = SemanticCache(settings(db, index_dir), dim=DIM)
    t0 = time.perf_counter()
    await again.warm_up()
    out["warm_saved_s"] = time.perf_counter() - t0
    out["saved_stats"] = again.stats()
    await again.aclose()
    return out


# -- Redis memory per entry (a private redis-server, if one is installed) ------------


def redis_memory(n: int, seed: int) -> dict[str, Any] | None:
    """Bytes per entry in Redis for the key layout of docs/scaling.md.

    Starts a private ``redis-server`` (no persistence) on a free port, writes ``n``
    entries of 100-entry per-user scopes, and reads ``used_memory`` before and
    after. Layout per entry: a hash ``sc:{<scope hash>}:e:<id>`` (query, answer,
    the three key parts, the float32 vector, metadata, timestamps, counters) with
    a TTL, and the id in the scope's set ``sc:{<scope hash>}:ids``.
    """
    import shutil as sh
    import socket

    exe = sh.which("redis-server")
    if exe is None:
        return None
    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        before = int(client.info("memory")["used_memory"])
        base = load_base()
        vecs = vectors(base, 0, n, seed)
        pipe = client.pipeline(transaction=False)
        now = time.time()
        for i in range(n):
            scope = user_scope(i % max(1, n // 100))
            tag = "{" + scope.hash + "}"
            key = f"sc:{tag}:e:{i:016x}"
            pipe.hset(
                key,
                mapping={
                    "q": f"synthetic question {i}",
                    "a": ANSWER,
                    "m": PARTS.model_id,
                    "i": PARTS.instruction_hash,
                    "c": PARTS.context_fingerprint,
                    "v": vecs[i].tobytes(),
                    "md": "{}",
                    "ca": now,
                    "lu": now,
                    "h": 0,
                    "p": 0,
                    "n": 0,
                },
            )
            pipe.expire(key, 3600)
            pipe.sadd(f"sc:{tag}:ids", f"{i:016x}")
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        after = int(client.info("memory")["used_memory"])
        first = f"sc:{{{user_scope(0).hash}}}:e:{0:016x}"
        sample = client.memory_usage(first, samples=0)
        encoding = client.object("encoding", first)
        return {
            "n": n,
            "bytes_per_entry": (after - before) / n,
            "memory_usage_one_hash": int(sample or 0),
            "hash_encoding": encoding.decode()
            if isinstance(encoding, bytes)
            else str(encoding),
            "answer_bytes": len(ANSWER),
            "version": client.info("server")["redis_version"],
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- parent --------------------------------------------------------------------------


def child(
    mode: str, entries: int, scopes: int, shared: int, db: Path, **kw: Any
) -> Any:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--entries",
        str(entries),
        "--scopes",
        str(scopes),
        "--shared",
        str(shared),
        "--db",
        str(db),
    ]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        cmd += [flag] if v is True else [] if v is False else [flag, str(v)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure(
    entries: int,
    scopes: int,
    shared: int,
    args: argparse.Namespace,
    engine_fill: bool,
    trace: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scale-", dir=args.tmp) as tmp:
        db = Path(tmp) / "cache.db"
        t0 = time.perf_counter()
        filled = child(
            "fill", entries, scopes, shared, db, seed=args.seed, engine_fill=engine_fill
        )
        filled["db_mib"] = db.stat().st_size / 2**20
        loaded = child(
            "load", entries, scopes, shared, db, seed=args.seed, lookups=args.lookups
        )
        wall = time.perf_counter() - t0
        if trace:  # a third process: where the bytes go (tracemalloc slows it)
            shutil.rmtree(Path(tmp) / "indexes", ignore_errors=True)
            loaded["trace"] = child(
                "load", entries, scopes, shared, db, seed=args.seed, trace=True
            )
    row = {
        "entries": entries,
        "scopes": scopes,
        "shared": shared,
        "total": entries + shared,
        **filled,
        **loaded,
        "wall_s": wall,
    }
    print(
        f"  {entries + shared:>9,} entries, {scopes:>6,}+1 scopes: fill "
        f"{filled['fill_s']:.1f}s, warm {loaded['warm_s']:.1f}s, "
        f"rss {loaded['rss_mib']:.0f} MiB, user p50 {loaded['user_p50_ms']:.3f} ms, "
        f"shared p50 {loaded.get('shared_p50_ms', math.nan):.3f} ms ({wall:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    return row


def parse_size(text: str) -> tuple[int, int]:
    entries, scopes = text.split(":")
    return int(entries), int(scopes)


def fmt_n(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def plot(rows: list[dict[str, Any]], sweep: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    n = [r["total"] for r in rows]
    ax = axes[0]
    ax.loglog(n, [r["rss_mib"] for r in rows], "o-", label="RSS after warm-up")
    ax.loglog(
        n, [r["rss_trim_mib"] for r in rows], "o--", label="same after malloc_trim"
    )
    ax.loglog(n, [r["peak_mib"] for r in rows], "s--", label="peak RSS during warm-up")
    ax.loglog(n, [r["db_mib"] for r in rows], "^:", label="SQLite file (disk, not RAM)")
    if sweep:
        ax.loglog(
            [r["total"] for r in sweep],
            [r["rss_mib"] for r in sweep],
            "x",
            ms=9,
            label="RSS, scope sweep (same entries)",
        )
    ax.set_xlabel("entries")
    ax.set_ylabel("MiB")
    ax.set_title("memory")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.loglog(n, [r["user_p50_ms"] for r in rows], "o-", label="per-user scope p50")
    ax.loglog(n, [r["user_p99_ms"] for r in rows], "o:", label="per-user scope p99")
    ax.loglog(n, [r["shared_p50_ms"] for r in rows], "s-", label="shared scope p50")
    ax.loglog(n, [r["shared_p99_ms"] for r in rows], "s:", label="shared scope p99")
    ax.set_xlabel("entries")
    ax.set_ylabel("ms (sqlite backend, hits)")
    ax.set_title("lookup latency")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.loglog(n, [r["warm_s"] for r in rows], "o-", label="warm_up from SQLite")
    ax.loglog(
        n, [r["warm_saved_s"] for r in rows], "s-", label="warm_up + saved indexes"
    )
    if sweep:
        ax.loglog(
            [r["total"] for r in sweep],
            [r["warm_s"] for r in sweep],
            "x",
            ms=9,
            label="warm_up, scope sweep",
        )
    ax.set_xlabel("entries")
    ax.set_ylabel("seconds")
    ax.set_title("start-up")
    ax.legend(fontsize=8)
    for ax, r in zip(axes, [rows] * 3, strict=True):
        for x in r:
            ax.annotate(
                f"{x['scopes']:,}+1 scopes",
                (x["total"], ax.get_ylim()[0]),
                fontsize=6,
                rotation=90,
                va="bottom",
                alpha=0.5,
            )
    fig.suptitle(
        "stagecache engine at scale (sqlite backend, MiniLM vectors + noise; "
        "shared 2-core machine, one run)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x): the growth exponent."""
    lx, ly = np.log(np.asarray(xs)), np.log(np.asarray(ys))
    return float(np.polyfit(lx, ly, 1)[0]) if len(xs) > 1 else math.nan


def report(rows: list[dict[str, Any]], sweep: list[dict[str, Any]], args: Any) -> str:
    head = rows[-1]
    lines = [
        "# Engine at scale",
        "",
        f"Measured by `benchmarks/scale.py` on {time.strftime('%Y-%m-%d')} in one "
        "run, 2-core machine shared with other engineers' jobs (one run, medians; "
        "compare within the tables). SQLite backend in a temporary directory; "
        f"`CacheSettings` defaults except the caps (hnswlib M={16}, "
        "ef_construction 200, ef 128, flat up to 3,072 entries per scope).",
        "",
        "Vectors: the cached all-MiniLM-L6-v2 vectors of the shared data "
        "(`benchmarks/.cache/emb.npz`, ~42k real sentences), each entry a copy plus "
        f"Gaussian noise (sigma {NOISE} per dimension), renormalised; queries are "
        f"stored entries plus sigma {QUERY_NOISE} noise (hits). Each size: "
        f"ENTRIES in SCOPES per-user scopes plus one shared scope of "
        f"{args.shared_fraction:g} x ENTRIES. Fill: "
        f"{rows[0]['fill_how']} for the smallest size, SqliteBackend.put_many "
        "(the same rows, 10,000 per transaction) for the others; each size is "
        "filled and loaded in fresh processes.",
        "",
        "## Growth with entries (and scopes)",
        "",
        "| entries (per-user + shared) | scopes | warm_up s | warm_up with saved "
        "indexes s | RSS after warm-up MiB | same after malloc_trim MiB | peak RSS "
        "in warm-up MiB | RSS bytes/entry (after trim) | per-user lookup p50 / "
        "p99 ms | shared lookup p50 / p99 ms | "
        "SQLite file MiB | fill µs/entry (how) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['total']:,} ({r['entries']:,} + {r['shared']:,}) | "
            f"{r['scopes']:,} + 1 | {r['warm_s']:.2f} | {r['warm_saved_s']:.2f} | "
            f"{r['rss_mib']:,.0f} | {r['rss_trim_mib']:,.0f} | {r['peak_mib']:,.0f} "
            f"| {r['bytes_per_entry']:,.0f} "
            f"({r['rss_trim_mib'] * 2**20 / r['total']:,.0f}) | "
            f"{r['user_p50_ms']:.3f} / "
            f"{r['user_p99_ms']:.3f} | {r['shared_p50_ms']:.3f} / "
            f"{r['shared_p99_ms']:.3f} | {r['db_mib']:,.0f} | "
            f"{r['fill_us_per_entry']:.0f} ({r['fill_how']}) |"
        )
    if len(rows) > 1:
        xs = [r["total"] for r in rows]
        lines += [
            "",
            "Growth exponents (log-log slope over these sizes; 1 = linear): "
            f"RSS {slope(xs, [r['rss_mib'] for r in rows]):.2f}, warm_up "
            f"{slope(xs, [r['warm_s'] for r in rows]):.2f}, per-user lookup p50 "
            f"{slope(xs, [r['user_p50_ms'] for r in rows]):.2f}, shared lookup p50 "
            f"{slope(xs, [r['shared_p50_ms'] for r in rows]):.2f}.",
        ]
    lines += [
        "",
        f"Lookups: {head['user_n']:,} per-user and {head['shared_n']:,} shared per "
        "size (hits, per size: per-user "
        + ", ".join(f"{r['user_hits']}" for r in rows)
        + "; shared "
        + ", ".join(f"{r['shared_hits']}" for r in rows)
        + "). A lookup with the sqlite backend includes fetching the answer "
        "(`get_many`) and updating its counters (`touch`), each a worker-thread "
        "round trip.",
    ]
    if sweep:
        lines += [
            "",
            "## Scope count at a fixed number of entries",
            "",
            "| entries | scopes | warm_up s | RSS MiB | RSS bytes/entry | per-user "
            "p50 ms |",
            "|---|---|---|---|---|---|",
        ]
        for r in sweep:
            lines.append(
                f"| {r['total']:,} | {r['scopes']:,} + 1 | {r['warm_s']:.2f} | "
                f"{r['rss_mib']:,.0f} | {r['bytes_per_entry']:,.0f} | "
                f"{r['user_p50_ms']:.3f} |"
            )
        if len(sweep) > 1:
            a, b = sweep[0], sweep[-1]
            per_scope = (
                (b["rss_mib"] - a["rss_mib"]) * 2**20 / (b["scopes"] - a["scopes"])
            )
            lines += [
                "",
                f"Marginal memory per scope (from {a['scopes']:,} to "
                f"{b['scopes']:,} scopes at {a['total']:,} entries): "
                f"{per_scope:,.0f} bytes.",
            ]
    for r in rows:
        if "trace" not in r:
            continue
        t = r["trace"]
        lines += [
            "",
            f"## Where the bytes go ({r['total']:,} entries, {r['scopes']:,} + 1 "
            "scopes)",
            "",
            "tracemalloc over `warm_up()` in a separate process (Python and numpy "
            "allocations still live after warm-up, per entry; hnswlib's C++ "
            f"graph is not traced). RSS added in that process: {t['rss_mib']:,.0f} "
            "MiB.",
            "",
            "| where (stagecache line) | bytes/entry | code |",
            "|---|---|---|",
        ]
        for where, per, code in t["trace"]:
            lines.append(f"| {where} | {per:,.0f} | `{code}` |")
    lines += ["", "![scale](scale.png)", ""]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    sizes = [parse_size(s) for s in args.sizes]
    rows = []
    print("growth with entries:", file=sys.stderr)
    for k, (entries, scopes) in enumerate(sizes):
        shared = int(entries * args.shared_fraction)
        trace = f"{entries}:{scopes}" == args.trace_size
        rows.append(measure(entries, scopes, shared, args, k == 0, trace))
    sweep = []
    if args.scope_sweep:
        entries_s, scope_list = args.scope_sweep.split(":")
        print("scope sweep:", file=sys.stderr)
        for scopes in (int(x) for x in scope_list.split(",")):
            sweep.append(measure(int(entries_s), scopes, 0, args, engine_fill=False))
    red = redis_memory(args.redis_entries, args.seed) if args.redis_entries else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(rows, sweep, RESULTS / "scale.png")
    text = report(rows, sweep, args)
    if red:
        text += (
            "\n## Redis memory per entry\n\n"
            f"A private redis-server {red['version']} (no persistence), "
            f"{red['n']:,} entries in the key layout of docs/scaling.md: one hash "
            "per entry (query, answer, key parts, 1,536-byte float32 vector, "
            "metadata, timestamps, counters) with a TTL, plus its id in the scope's "
            f"set. `used_memory` grew by {red['bytes_per_entry']:,.0f} bytes per "
            f"entry with a {red['answer_bytes']}-byte answer; `MEMORY USAGE` of one "
            f"hash: {red['memory_usage_one_hash']:,} bytes (encoding "
            f"{red['hash_encoding']}).\n"
        )
    raw = {"sizes": rows, "sweep": sweep, "redis": red}
    text += (
        f"\nWhole run: {time.perf_counter() - started:.0f} s. Raw figures:\n\n"
        "```json\n" + json.dumps(raw, indent=1) + "\n```\n"
    )
    (RESULTS / "scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["10000:100", "100000:1000", "1000000:10000"],
        help="ENTRIES:SCOPES per-user entries and scopes, smallest first",
    )
    parser.add_argument("--shared-fraction", type=float, default=0.1)
    parser.add_argument(
        "--scope-sweep",
        default="100000:100,1000,10000",
        help="ENTRIES:S1,S2,.. (no shared scope); '' to skip",
    )
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument(
        "--trace-size",
        default="100000:1000",
        help="the size (of --sizes) to break down with tracemalloc; '' to skip",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--redis-entries",
        type=int,
        default=20_000,
        help="entries for the Redis memory measurement (0 skips it)",
    )
    parser.add_argument("--tmp", default=None, help="directory for the SQLite files")
    # Child-process options.
    parser.add_argument("--child", choices=["fill", "load"], default=None)
    parser.add_argument("--entries", type=int, default=0)
    parser.add_argument("--scopes", type=int, default=1)
    parser.add_argument("--shared", type=int, default=0)
    parser.add_argument("--db", default="")
    parser.add_argument("--engine-fill", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parsed = parser.parse_args()
    if parsed.child:
        fn = fill if parsed.child == "fill" else load
        print(json.dumps(anyio.run(fn, parsed)), flush=True)
    else:
        main(parsed)
