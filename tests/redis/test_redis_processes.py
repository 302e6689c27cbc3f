"""Two worker processes on one Redis: stores, invalidations, purges and caps."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.redis

WORKER = Path(__file__).with_name("redis_worker.py")


class Worker:
    """A cache worker process driven by JSON lines."""

    def __init__(self, url: str, namespace: str, settings: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, namespace, json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == {"ready": True}

    def _line(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.poll()}"
        return json.loads(line)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def __call__(self, **cmd: Any) -> Any:
        self.send(**cmd)
        return self._line()

    def reply(self) -> Any:
        return self._line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send(op="quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def workers(redis_url, namespace) -> Iterator[Any]:
    started: list[Worker] = []

    def start(**settings: Any) -> Worker:
        w = Worker(redis_url, namespace, settings)
        started.append(w)
        return w

    try:
        yield start
    finally:
        for w in started:
            w.close()


def test_two_processes_share_stores_invalidations_and_purges(workers) -> None:
    a, b = workers(), workers()
    assert a(op="store", user="alice", seed=1, answer="one")["id"]
    assert b(op="wait", user="alice", seed=1, hit=True) == {
        "ok": True, "hit": "one", "reason": "hit"
    }  # fmt: skip
    # Invalidation on A: B cannot serve it once A's call returned.
    assert a(op="invalidate", user="alice") == {"count": 1}
    assert b(op="lookup", user="alice", seed=1)["hit"] is None
    # A store on B, a purge on A: gone on both.
    b(op="store", user="alice", seed=2, answer="two")
    b(op="store", user="bob", seed=3, answer="three")
    assert a(op="wait", user="alice", seed=2, hit=True)["ok"]
    assert a(op="purge", user="alice") == {"count": 1}
    assert b(op="lookup", user="alice", seed=2)["hit"] is None
    assert b(op="wait", user="alice", seed=2, hit=False)["ok"]
    assert a(op="wait", user="bob", seed=3, hit=True)["hit"] == "three"
    for w in (a, b):
        stats = w(op="stats")
        assert stats["users"] == 1 and stats["entries"] == 1


def test_concurrent_writers_respect_the_caps_exactly(workers, raw, namespace) -> None:
    settings = {"max_entries_per_user": 25, "max_total_entries": 40}
    a, b = workers(**settings), workers(**settings)
    # Both processes write at the same time: alice from both, plus bob and carol.
    a.send(op="fill", user="alice", start=0, n=60)
    b.send(op="fill", user="alice", start=1000, n=60)
    assert a.reply() == {"done": 60} and b.reply() == {"done": 60}
    a.send(op="fill", user="bob", start=2000, n=30)
    b.send(op="fill", user="carol", start=3000, n=30)
    assert a.reply() == {"done": 30} and b.reply() == {"done": 30}
    p = f"{namespace}:"
    entries = [k for k in raw.scan_iter(match=p + "e:*", count=1000)]
    assert len(entries) == 40 == raw.zcard(p + "lru") == raw.hlen(p + "w")
    for user in ("alice", "bob", "carol"):
        assert raw.zcard(p + f"u:{user}") <= 25
    assert raw.zcard(p + "u:bob") + raw.zcard(p + "u:carol") >= 15
    # Both workers converge on exactly what Redis holds.
    for w in (a, b):
        for _ in range(200):
            if w(op="stats")["entries"] == 40:
                break
        assert w(op="stats")["entries"] == 40
