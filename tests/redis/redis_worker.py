"""A cache worker process for the multi-process redis tests (not a test module).

Usage: ``python redis_worker.py URL NAMESPACE SETTINGS_JSON``. It reads one JSON
command per line on stdin and answers one JSON line on stdout:

- ``{"op": "store", "user": u, "seed": s, "answer": a}`` -> ``{"id": ...}``
- ``{"op": "lookup", "user": u, "seed": s}`` -> ``{"hit": answer | null, "reason"}``
- ``{"op": "wait", "user": u, "seed": s, "hit": bool, "timeout": t}`` -> polls the
  lookup until it hits (or misses, with ``hit: false``) -> ``{"ok": bool, ...}``
- ``{"op": "invalidate", "user": u}`` / ``{"op": "purge", "user": u}`` -> count
- ``{"op": "fill", "user": u, "start": i, "n": k}``: stores k entries, concurrently
- ``{"op": "stats"}`` -> the engine's stats; ``{"op": "quit"}``

Vectors are reproducible unit vectors from the seed (no embedding model needed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import msgspec
import numpy as np

from stagecache._model import Caller
from stagecache.cache import CacheSettings, KeyParts, RedisBackend, SemanticCache

PARTS = KeyParts("model", "instructions", "context")


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


async def main() -> None:
    url, namespace, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = msgspec.convert(json.loads(raw), CacheSettings)
    backend = RedisBackend(
        url,
        namespace=namespace,
        max_entries_per_user=settings.max_entries_per_user,
        max_total_entries=settings.max_total_entries,
    )
    cache = SemanticCache(settings, backend=backend)
    await cache.warm_up()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    print(json.dumps({"ready": True}), flush=True)

    def scope(user: str) -> Any:
        return cache.scope_for(Caller(user_id=user))

    while line := await reader.readline():
        cmd = json.loads(line)
        op = cmd["op"]
        out: dict[str, object]
        if op == "store":
            eid = await cache.store(
                scope(cmd["user"]), f"q{cmd['seed']}", unit(cmd["seed"]), PARTS,
                cmd["answer"],
            )  # fmt: skip
            out = {"id": eid}
        elif op == "lookup":
            found = await cache.lookup(
                scope(cmd["user"]), unit(cmd["seed"]), PARTS, f"q{cmd['seed']}"
            )
            answer = found.hit.answer if found.hit else None
            out = {"hit": answer, "reason": found.reason}
        elif op == "wait":
            deadline = time.monotonic() + cmd.get("timeout", 10.0)
            while True:
                found = await cache.lookup(
                    scope(cmd["user"]), unit(cmd["seed"]), PARTS, f"q{cmd['seed']}"
                )
                ok = (found.hit is not None) == cmd["hit"]
                if ok or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.002)
            out = {
                "ok": ok,
                "hit": found.hit.answer if found.hit else None,
                "reason": found.reason,
            }
        elif op == "invalidate":
            out = {"count": await cache.invalidate(scope(cmd["user"]))}
        elif op == "purge":
            out = {"count": await cache.purge_user(cmd["user"])}
        elif op == "fill":
            user, start, n = cmd["user"], cmd["start"], cmd["n"]

            async def one(i: int, user: str = user) -> None:
                await cache.store(scope(user), f"q{i}", unit(i), PARTS, f"a{i}")

            await asyncio.gather(*(one(i) for i in range(start, start + n)))
            out = {"done": n}
        elif op == "stats":
            await cache.apply_changes()
            out = cache.stats()
        elif op == "quit":
            break
        else:
            out = {"error": f"unknown op {op}"}
        print(json.dumps(out), flush=True)
    await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main())
