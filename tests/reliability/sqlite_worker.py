"""Subprocess side of the crash, disk-full and corrupted-file tests.

    python sqlite_worker.py write DB N         store N entries, print each id stored
    python sqlite_worker.py check DB [INDEX_DIR]  reopen, verify, print a JSON report
    python sqlite_worker.py diskfull DB        requests under RLIMIT_FSIZE, JSON report

Entry i: user ``user-{i % 10}``, query ``q-{i}``, answer ``answer-{i}``, vector
``vec(i)`` (a seeded unit vector), so a reader can tell a right answer from a wrong
one without any shared state.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import numpy as np

DIM = 32


def vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def settings(db: str, index_dir: str | None = None):  # type: ignore[no-untyped-def]
    from stagecache.cache import BackendSettings, CacheSettings

    return CacheSettings(
        threshold=0.99,
        flat_max_entries=16,  # scopes promote to hnswlib early: both index kinds
        index_dir=index_dir,
        backend=BackendSettings(kind="sqlite", path=db),
    )


async def write(db: str, n: int) -> None:
    from stagecache import Caller
    from stagecache.cache import KeyParts, SemanticCache

    parts = KeyParts("m", "i", "c")
    async with SemanticCache(settings(db), dim=DIM) as cache:
        for i in range(n):
            scope = cache.scope_for(Caller(user_id=f"user-{i % 10}"))
            await cache.store(scope, f"q-{i}", vec(i), parts, f"answer-{i}")  # type: ignore[arg-type]
            print(i, flush=True)


async def check(db: str, index_dir: str | None) -> dict[str, object]:
    from stagecache import Caller
    from stagecache.cache import KeyParts, SemanticCache

    parts = KeyParts("m", "i", "c")
    cache = SemanticCache(settings(db, index_dir), dim=DIM)
    async with cache:
        stored = [e async for batch in cache.backend.scan() for e in batch]
        wrong_rows = [
            e.entry_id
            for e in stored
            if e.answer != "a" + e.query[1:].replace("-", "nswer-", 1)
        ]
        wrong, missed = 0, 0
        for e in stored:
            i = int(e.query.split("-")[1])
            scope = cache.scope_for(Caller(user_id=f"user-{i % 10}"))
            found = await cache.lookup(scope, vec(i), parts, e.query)  # type: ignore[arg-type]
            if found.hit is None:
                missed += 1
            elif found.hit.answer != f"answer-{i}":
                wrong += 1
        return {
            "backend": await cache.backend.count(),
            "index": cache.stats()["entries"],
            "rows": len(stored),
            "bad_rows": len(wrong_rows),
            "wrong": wrong,
            "missed": missed,
        }


class HashEmbedder:
    """Deterministic unit vectors from the text (no model: the disk is under test)."""

    model_id = "hash"
    dim = 384  # build() sizes the engine for 384 whatever the embedder says

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            v = np.random.default_rng(sum(map(ord, t))).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows).astype(np.float32)


async def diskfull(db: str) -> dict[str, object]:
    import stagecache
    from stagecache.config import build
    from stagecache.testing import ScriptedLLM

    big = "x" * 20_000
    pipeline = build(
        llm=ScriptedLLM(lambda p: f"{p} {big}"),
        embedder=HashEmbedder(),
        cache=settings(db),
    )
    out: list[dict[str, object]] = []
    async with pipeline:
        for i in range(3):  # some entries fit
            await pipeline.run(f"warm {i}", caller=stagecache.Caller(user_id="u"))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        size = file_size(db) + file_size(db + "-wal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 30_000, size + 30_000))
        for i in range(20):
            r = await pipeline.run(
                f"question {i}", caller=stagecache.Caller(user_id="u")
            )
            out.append(
                {
                    "answered": r.answer.startswith(f"question {i} "),
                    "stored": r.cache.stored,
                    "errors": r.errors,
                }
            )
    return {"results": out}


def file_size(path: str) -> int:
    return Path(path).stat().st_size


def main() -> None:
    mode, db = sys.argv[1], sys.argv[2]
    if mode == "write":
        anyio.run(write, db, int(sys.argv[3]))
    elif mode == "check":
        index_dir = sys.argv[3] if len(sys.argv) > 3 else None
        try:
            report = anyio.run(check, db, index_dir)
        except Exception as exc:  # the parent judges whether the error is clear
            report = {"error": type(exc).__name__, "message": str(exc)}
        print("REPORT " + json.dumps(report), flush=True)
    else:
        print("REPORT " + json.dumps(anyio.run(diskfull, db)), flush=True)


if __name__ == "__main__":
    main()
