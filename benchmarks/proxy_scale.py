"""Scale-out of the proxy: cache hits at 1/4/16/64 clients, 1 and 2 workers.

    HF_HUB_OFFLINE=1 python benchmarks/proxy_scale.py [--seconds 4] [--out FILE]

The proxy runs as ``stagecache serve --workers N`` over the Redis backend (the
memory backend cannot be shared by workers) at 127.0.0.1:6379, under a namespace
of its own that is deleted afterwards; the upstream is the fake of
``benchmarks/proxy.py`` (500 ms). Every client repeats a question already cached
for its user; each client has its own connection (see ``proxy._load``). One more
row runs the old generator (one shared httpx pool) at 64 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import proxy as base  # noqa: E402

CLIENTS = (1, 4, 16, 64)


def _config(namespace: str) -> str:
    return (
        base.CONFIG
        + '\n[cache.backend]\nkind = "redis"\nredis_url = "redis://127.0.0.1:6379/0"\n'
        f'redis_namespace = "{namespace}"\n'
    )


async def _seed(proxy: str) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        for i in range(max(CLIENTS)):
            question = f"How do I reset the password of account {i}?"
            await http.post(
                proxy + "/chat/completions",
                json={
                    "model": "m",
                    "messages": [{"role": "user", "content": question}],
                },
                headers={
                    "x-stagecache-user": f"user{i}",
                    "authorization": base.KEY_HEADER,
                },
            )
    await asyncio.sleep(1.0)  # the other worker applies the change events


async def _points(proxy: str, workers: int, seconds: float) -> list[str]:
    rows = []
    runs: list[tuple[int, bool]] = [(c, False) for c in CLIENTS]
    if workers == 1:
        runs.append((64, True))
    for clients, shared in runs:
        n, lat, errors = await base._load(
            proxy, clients, seconds, "hit", shared_pool=shared
        )
        generator = "one shared pool" if shared else "a client each"
        rows.append(
            f"| {workers} | {clients} | {generator} | {n / seconds:.1f} "
            f"| {base._pct(lat, 0.5):.1f} | {base._pct(lat, 0.99):.1f} "
            f"| {n} | {errors} |"
        )
        print(rows[-1], flush=True)
    return rows


def _drop(namespace: str) -> None:
    import redis

    client = redis.Redis()
    try:
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", default=str(HERE / "results" / "proxy.md"))
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    stagecache = Path(sys.executable).with_name("stagecache")
    up_port = base._free_port()
    upstream = subprocess.Popen(
        [sys.executable, base.__file__, "--role", "upstream", "--port", str(up_port)],
        env=env,
    )
    rows: list[str] = []
    started = time.perf_counter()
    try:
        asyncio.run(base._wait(f"http://127.0.0.1:{up_port}/v1/models"))
        for workers in (int(w) for w in args.workers.split(",")):
            namespace = f"bench-scale-{uuid.uuid4().hex[:8]}"
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(_config(namespace))
            port = base._free_port()
            command = [str(stagecache), "serve", "--upstream"]
            command += [f"http://127.0.0.1:{up_port}/v1", "--port", str(port)]
            command += ["--config", f.name, "--workers", str(workers)]
            proxy = subprocess.Popen(command, env=env)
            try:
                asyncio.run(base._wait(f"http://127.0.0.1:{port}/healthz"))
                time.sleep(5.0)  # every worker has loaded its model
                url = f"http://127.0.0.1:{port}/v1"
                asyncio.run(_seed(url))
                rows += asyncio.run(_points(url, workers, args.seconds))
            finally:
                proxy.terminate()
                proxy.wait(timeout=60)
                os.unlink(f.name)
                _drop(namespace)
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    took = time.perf_counter() - started
    section = [
        "",
        "## Scale-out: hits by clients and workers",
        "",
        f"`python benchmarks/proxy_scale.py --seconds {args.seconds:g}` on "
        f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python "
        f"{platform.python_version()}; {took:.0f} s in all. `stagecache serve "
        "--workers N` over the Redis backend (ONNX int8 embedder, structural "
        "verifier); closed-loop httpx clients in this process, on the same two "
        "cores as the workers. One run per point (the median of one run): the "
        "machine is shared with other jobs and noisy.",
        "",
        "| workers | clients | generator | req/s | p50 ms | p99 ms | requests "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out = Path(args.out)
    text = out.read_text() if out.exists() else "# Proxy benchmark\n"
    marker = "\n## Scale-out: hits by clients and workers"
    text = text.split(marker)[0].rstrip("\n") + "\n"
    out.write_text(text + "\n".join([*section, *rows]) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
