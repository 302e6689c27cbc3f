"""The sqlite backend under crashes, a full disk and damaged files.

The writing side runs in a subprocess (``sqlite_worker.py``) so that it can be
SIGKILLed or given a file-size limit without touching the test process; a reader
then reopens the file and checks every row and every lookup.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from stagecache import Caller
from stagecache.cache import BackendSettings, CacheSettings, KeyParts, SemanticCache

WORKER = str(Path(__file__).with_name("sqlite_worker.py"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "STAGECACHE_LOG_FORMAT": "json"}


def worker(*args: str, timeout: float = 60) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, WORKER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    reports = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")]
    assert proc.returncode == 0 and reports, proc.stderr[-2000:]
    report: dict[str, Any] = json.loads(reports[-1][len("REPORT ") :])
    return report


def assert_consistent(report: dict[str, Any]) -> None:
    assert "error" not in report, report
    assert report["backend"] == report["index"] == report["rows"]
    assert report["bad_rows"] == report["wrong"] == report["missed"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_during_writes_leaves_every_entry_readable_and_indexed(
    tmp_path: Path, seed: int
) -> None:
    db = str(tmp_path / "cache.db")
    kill_after = random.Random(seed).randint(50, 400)
    proc = subprocess.Popen(
        [sys.executable, WORKER, "write", db, "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    written = 0
    for _line in proc.stdout:
        written += 1
        if written >= kill_after:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    report = worker("check", db)
    assert_consistent(report)
    assert report["rows"] >= written  # every acknowledged store survived


def test_disk_full_during_writes_answers_every_request_and_reports_cache_error(
    tmp_path: Path,
) -> None:
    report = worker("diskfull", str(tmp_path / "cache.db"))
    results = report["results"]
    assert all(r["answered"] for r in results)
    failed = [r for r in results if not r["stored"]]
    assert failed
    assert all(
        any(e.startswith("cache.store: BackendUnavailable") for e in r["errors"])
        for r in failed
    )


def test_file_left_by_a_full_disk_reopens_with_index_matching_store(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "cache.db")
    worker("diskfull", db)

    async def reopen() -> tuple[int, int]:
        settings = CacheSettings(backend=BackendSettings(kind="sqlite", path=db))
        async with SemanticCache(settings) as cache:
            return cache.stats()["entries"], await cache.backend.count()

    entries, count = anyio.run(reopen)
    assert entries == count >= 3


def _written(tmp_path: Path, n: int = 60) -> str:
    db = str(tmp_path / "cache.db")
    subprocess.run(
        [sys.executable, WORKER, "write", db, str(n)],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=60,
    )
    return db


def _damage(path: str, how: str, seed: int) -> None:
    size = os.path.getsize(path)
    rng = random.Random(seed)
    if how == "truncated":
        os.truncate(path, rng.randint(1, size - 1))
    elif how == "header":
        with open(path, "r+b") as fh:
            fh.write(os.urandom(100))
    elif how == "pages":
        with open(path, "r+b") as fh:
            for _ in range(8):
                fh.seek(rng.randint(4096, size - 512))
                fh.write(os.urandom(512))
    else:  # foreign: a file that is no database at all
        Path(path).write_bytes(os.urandom(size))


@pytest.mark.parametrize("how", ["truncated", "header", "pages", "foreign"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_damaged_sqlite_file_is_a_clear_error_or_reads_back_right(
    tmp_path: Path, how: str, seed: int
) -> None:
    db = _written(tmp_path)
    _damage(db, how, seed)
    report = worker("check", db)
    if "error" in report:
        assert report["error"] in ("CacheError", "BackendUnavailable"), report
        assert db in report["message"]
    else:
        assert_consistent(report)


@pytest.mark.parametrize(
    ("suffix", "how"),
    [
        (".hnsw", "truncated"),
        (".hnsw", "pages"),  # finding F4 (fixed): this crashed hnswlib (SIGSEGV)
        (".json", "truncated"),
        (".json", "pages"),
    ],
)
def test_damaged_saved_index_is_rebuilt_or_refused_never_wrong(
    tmp_path: Path, suffix: str, how: str
) -> None:
    db = _written(tmp_path, 200)  # 20 per user: promoted to hnswlib (flat max 16)
    index_dir = str(tmp_path / "idx")
    report = worker("check", db, index_dir)  # saves the hnsw graphs on close
    assert_consistent(report)
    saved = sorted(Path(index_dir).glob(f"*{suffix}"))
    assert saved
    for i, path in enumerate(saved):
        if how == "pages" and os.path.getsize(path) < 5000:
            _damage(str(path), "header", i)
        else:
            _damage(str(path), how, i)
    assert_consistent(worker("check", db, index_dir))


def swap_saved_rows(index_dir: str) -> None:
    """Damage alice's cold flat index: rows swapped, same ids, same shape."""
    (npy,) = Path(index_dir).glob("*.npy")
    np.save(npy, np.load(npy)[::-1].copy())


# Regression test for finding F3: damaged saved flat vectors were trusted (fixed).
@pytest.mark.anyio
async def test_saved_flat_index_with_damaged_vectors_never_answers_wrong(
    tmp_path: Path,
) -> None:
    dim, parts = 8, KeyParts("m", "i", "c")
    vectors = np.eye(dim, dtype=np.float32)
    settings = CacheSettings(
        threshold=0.99,
        index_dir=str(tmp_path / "idx"),
        max_hot_scopes=1,
        backend=BackendSettings(kind="sqlite", path=str(tmp_path / "c.db")),
    )
    alice = Caller(user_id="alice")
    async with SemanticCache(settings, dim=dim) as cache:
        scope = cache.scope_for(alice)
        await cache.store(scope, "q0", vectors[0], parts, "answer-0")  # type: ignore[arg-type]
        await cache.store(scope, "q1", vectors[1], parts, "answer-1")  # type: ignore[arg-type]
        bob = cache.scope_for(Caller(user_id="bob"))
        await cache.store(bob, "q2", vectors[2], parts, "answer-2")  # type: ignore[arg-type]
    swap_saved_rows(settings.index_dir or "")
    async with SemanticCache(settings, dim=dim) as cache:
        found = await cache.lookup(cache.scope_for(alice), vectors[0], parts, "q0")  # type: ignore[arg-type]
    assert found.hit is None or found.hit.answer == "answer-0"
