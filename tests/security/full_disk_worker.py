"""Subprocess side of the full-disk tests (finding 8 of issue 13).

    python full_disk_worker.py start ROOT     start a pipeline with no writable byte
    python full_disk_worker.py model ROOT     find the default model, no byte writable
    python full_disk_worker.py hnsw ROOT      save an hnswlib graph that does not fit
    python full_disk_worker.py lookups ROOT   lookups once the disk filled up

The disk is "full" through ``RLIMIT_FSIZE = 0``: every write to a regular file then
fails (``EFBIG``; ``SIGXFSZ`` is ignored), as on a full disk, for SQLite, numpy,
the model copy and everything else in the process, without root or a mount. The
parent reads one ``REPORT {json}`` line.
"""

from __future__ import annotations

import json
import logging
import resource
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

QUESTIONS = ("How do I reset my password?", "What is the refund policy?")
USERS = [f"user-{i}" for i in range(12)]


class HashEmbedder:
    """Deterministic unit vectors from the text (no model: the disk is under test)."""

    model_id = "hash"
    dim = 384

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for t in texts:
            v = np.random.default_rng(sum(map(ord, t))).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows).astype(np.float32)


class Records(logging.Handler):
    """Every record of the ``stagecache`` loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(
            {
                "logger": record.name,
                "level": record.levelname,
                "msg": record.getMessage(),
            }
        )


def fill_disk() -> None:
    # Python picks its temporary directory by writing a probe file, and torch's
    # import asks for it: pick it while there is room (a process started on a
    # full disk gets no further than that import, whatever stagecache does).
    tempfile.gettempdir()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def settings(root: Path, **options: Any) -> Any:
    from stagecache.cache import BackendSettings, CacheSettings

    return CacheSettings(
        backend=BackendSettings(kind="sqlite", path=str(root / "cache.db")),
        index_dir=str(root / "idx"),
        **options,
    )


async def populate(root: Path) -> None:
    """A cache file and saved indexes from an earlier run, on a disk with room."""
    from stagecache import Caller
    from stagecache.cache import KeyParts, SemanticCache

    async with SemanticCache(settings(root, max_hot_scopes=1)) as cache:
        for i, user in enumerate(USERS[:3]):
            scope = cache.scope_for(Caller(user_id=user))
            vec = await HashEmbedder().embed([f"q{i}"])
            await cache.store(scope, f"q{i}", vec[0], KeyParts("m", "i", "c"), "a")  # type: ignore[arg-type]


async def run_requests(pipeline: Any, rounds: int) -> list[dict[str, Any]]:
    import stagecache

    out = []
    for _ in range(rounds):
        for user in USERS:
            for question in QUESTIONS:
                r = await pipeline.run(question, caller=stagecache.Caller(user_id=user))
                out.append(
                    {
                        "answered": r.answer == f"[{user}] {question}",
                        "status": r.cache.status,
                        "errors": r.errors,
                    }
                )
    return out


def llm() -> Any:
    from stagecache.testing import ScriptedLLM

    class PerUser(ScriptedLLM):
        async def complete(self, turn: Any) -> Any:
            done = await super().complete(turn)
            done.text = f"[{turn.caller.user_id}] {turn.query}"
            return done

    return PerUser(lambda p: p)


async def start(root: Path) -> dict[str, Any]:
    """Start a pipeline over a sqlite cache with saved indexes, the disk full."""
    from stagecache.config import build
    from stagecache.pipeline._events import CacheError
    from stagecache.testing import capture_events

    await populate(root)
    logs = Records()
    logging.getLogger("stagecache").addHandler(logs)
    logging.getLogger("stagecache").setLevel(logging.INFO)
    fill_disk()
    pipeline = build(llm=llm(), embedder=HashEmbedder(), cache=settings(root))
    report: dict[str, Any] = {}
    with capture_events(pipeline.events) as seen:
        try:
            await pipeline.__aenter__()
        except BaseException as exc:  # the parent asserts there is none
            report["start_error"] = f"{type(exc).__module__}.{type(exc).__name__}"
            report["message"] = str(exc)[:300]
            return report
        try:
            report["results"] = await run_requests(pipeline, rounds=1)
        finally:
            await pipeline.__aexit__(None, None, None)
    report["events"] = [
        [e.operation, e.error_type] for e in seen.events if isinstance(e, CacheError)
    ]
    report["logs"] = logs.seen
    return report


async def model(root: Path) -> dict[str, Any]:
    """Locate the default model with a fresh, unwritable cache directory."""
    from stagecache.embeddings._paths import resolve_model

    fill_disk()
    try:
        found = resolve_model(None, cache_dir=root / "models")
    except BaseException as exc:  # the parent asserts there is none
        return {"error": f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]}
    path = found.path
    assert path is not None
    return {
        "config": (path / "config.json").is_file(),
        "left": sorted(str(p) for p in (root / "models").rglob("*") if p.is_file()),
    }


async def hnsw(root: Path) -> dict[str, Any]:
    """Save an hnswlib graph when only its first 100 kB fit on the disk."""
    from stagecache.cache._index import HnswIndex
    from stagecache.cache._persist import save_index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    graph = HnswIndex(64, 2000)
    graph.add([str(i) for i in range(2000)], vectors)
    tempfile.gettempdir()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    try:
        save_index(str(root / "idx"), "scope", graph, 64)
        raised = None
    except OSError as exc:
        raised = type(exc).__name__
    return {"raised": raised, "files": sorted(p.name for p in (root / "idx").iterdir())}


async def lookups(root: Path) -> dict[str, Any]:
    """Entries stored while there was room; then the disk fills and users come back."""
    from stagecache.config import build

    pipeline = build(
        llm=(model := llm()),
        embedder=HashEmbedder(),
        cache=settings(root, max_hot_scopes=2),
    )
    report: dict[str, Any] = {}
    async with pipeline:
        stored = await run_requests(pipeline, rounds=1)
        report["stored"] = sum(r["status"] == "miss" for r in stored)
        calls = model.calls
        fill_disk()
        report["results"] = await run_requests(pipeline, rounds=3)
        report["model_calls"] = model.calls - calls
    report["tmp_files"] = sorted(p.name for p in (root / "idx").glob("*.tmp"))
    return report


def main() -> None:
    mode, root = sys.argv[1], Path(sys.argv[2])
    try:
        report = anyio.run(
            {"start": start, "model": model, "hnsw": hnsw, "lookups": lookups}[mode],
            root,
        )
    except BaseException as exc:  # reported, not hidden: the parent fails on it
        report = {"crash": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print("REPORT " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
