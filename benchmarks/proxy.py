"""Throughput and latency of the proxy: hits and misses at 1/16/64 clients.

    HF_HUB_OFFLINE=1 python benchmarks/proxy.py [--seconds 6] [--out FILE]

Three processes on loopback: a fake OpenAI-compatible upstream that answers in
500 ms, ``stagecache`` proxy (ONNX int8 embedder, memory backend) and this load
generator. Hits: every client repeats a question already cached for its user.
Misses: every request asks a new question. "Direct" misses go to the upstream
without the proxy, so miss overhead = proxy p50 - direct p50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The structural verifier: the default learned one currently rejects even an
# identical repeat of these questions (similarity 1.0 -> rejected_by_verifier).
CONFIG = """
[embedder]
kind = "onnx"
quantize = "int8"

[verifier]
kind = "structural"
"""


KEY = "sk-bench"
KEY_HEADER = f"Bearer {KEY}"


def _serve_upstream(port: int) -> None:
    import uvicorn

    sys.path.insert(0, str(ROOT / "tests" / "integrations"))
    from servers import FakeUpstream

    # It checks keys, as OpenAI does: the proxy scopes the cache by the key.
    fake = FakeUpstream(delay_s=0.5, keys=frozenset({KEY}))
    uvicorn.run(fake.app, port=port, log_level="warning")


def _serve_proxy(
    port: int, upstream: int, config: str, extra: tuple[str, ...] = ()
) -> None:
    from stagecache.integrations.proxy import serve_main

    serve_main(
        [
            *extra,
            "--upstream",
            f"http://127.0.0.1:{upstream}/v1",
            "--port",
            str(port),
            "--config",
            config,
            "--log-level",
            "warning",
        ]
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait(url: str, patience_s: float = 180.0) -> None:
    deadline = time.monotonic() + patience_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


async def _load(
    base: str, clients: int, seconds: float, kind: str, *, shared_pool: bool = False
) -> tuple[int, list[float], int]:
    """(requests, latencies, errors) of ``clients`` closed-loop clients.

    Each client has its own ``httpx.AsyncClient`` (one connection): with one
    shared pool, httpcore scans every connection for every request
    (``_assign_requests_to_connections``), so at 64 clients the generator itself
    ran out of CPU and the proxy sat idle (py-spy, benchmarks/results/proxy.md).
    ``shared_pool=True`` reproduces that generator.
    """
    latencies: list[float] = []
    errors = 0
    # Clients are made before the clock starts, sharing one TLS context (each
    # AsyncClient would otherwise load the CA bundle: ~40 ms of CPU apiece).
    tls = ssl.create_default_context()
    if shared_pool:
        limits = httpx.Limits(max_connections=clients + 4)
        shared = httpx.AsyncClient(timeout=60, limits=limits, verify=tls)
        https = [shared] * clients
    else:
        https = [httpx.AsyncClient(timeout=60, verify=tls) for _ in range(clients)]
    stop = time.monotonic() + seconds

    async def one(i: int) -> None:
        nonlocal errors
        headers = {"x-stagecache-user": f"user{i}", "authorization": KEY_HEADER}
        http = https[i]
        while time.monotonic() < stop:
            question = (
                f"How do I reset the password of account {i}?"
                if kind == "hit"
                else f"Tell me about topic {uuid.uuid4().hex}"
            )
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": question}],
            }
            t0 = time.perf_counter()
            r = await http.post(base + "/chat/completions", json=body, headers=headers)
            dt = time.perf_counter() - t0
            outcome = r.headers.get("x-stagecache", "direct")
            if r.status_code != 200 or (kind == "hit" and outcome != "hit"):
                errors += 1
            else:
                latencies.append(dt)

    try:
        await asyncio.gather(*(one(i) for i in range(clients)))
    finally:
        for http in set(https):
            await http.aclose()
    return len(latencies), latencies, errors


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _bench(proxy: str, upstream: str, seconds: float) -> list[str]:
    rows = []
    async with httpx.AsyncClient(timeout=60) as http:  # cache one question per user
        for i in range(64):
            body = {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": f"How do I reset the password of account {i}?",
                    }
                ],
            }
            await http.post(
                proxy + "/chat/completions",
                json=body,
                headers={"x-stagecache-user": f"user{i}", "authorization": KEY_HEADER},
            )
    for clients in (1, 16, 64):
        for kind, base in (("hit", proxy), ("miss", proxy), ("direct", upstream)):
            span = seconds if kind == "hit" else max(2.0, seconds / 2)
            n, lat, errors = await _load(base, clients, span, kind)
            rows.append(
                f"| {kind} | {clients} | {n / span:.1f} | {_pct(lat, 0.5):.1f} "
                f"| {_pct(lat, 0.99):.1f} | {n} | {errors} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--role", choices=["bench", "upstream", "proxy"], default="bench"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream-port", type=int, default=0)
    parser.add_argument("--config", default="")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", default=str(HERE / "results" / "proxy.md"))
    args = parser.parse_args()
    if args.role == "upstream":
        _serve_upstream(args.port)
        return 0
    if args.role == "proxy":
        _serve_proxy(args.port, args.upstream_port, args.config)
        return 0
    up_port, proxy_port = _free_port(), _free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    me = [sys.executable, __file__]
    procs = [
        subprocess.Popen([*me, "--role", "upstream", "--port", str(up_port)], env=env),
        subprocess.Popen(
            [
                *me,
                "--role",
                "proxy",
                "--port",
                str(proxy_port),
                "--upstream-port",
                str(up_port),
                "--config",
                f.name,
            ],
            env=env,
        ),
    ]
    try:
        proxy = f"http://127.0.0.1:{proxy_port}/v1"
        upstream = f"http://127.0.0.1:{up_port}/v1"
        asyncio.run(_wait(f"http://127.0.0.1:{proxy_port}/healthz"))
        asyncio.run(_wait(upstream + "/models"))
        started = time.perf_counter()
        rows = asyncio.run(_bench(proxy, upstream, args.seconds))
        took = time.perf_counter() - started
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        os.unlink(f.name)
    header = [
        "# Proxy benchmark",
        "",
        f"`python benchmarks/proxy.py --seconds {args.seconds:g}` on "
        f"{platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, Python {platform.python_version()}; "
        f"load phase {took:.0f} s. Upstream: a local fake that answers in 500 ms. "
        "Proxy: ONNX int8 embedder, structural verifier, memory backend, default "
        "chain; "
        "load generator: closed-loop httpx clients in a separate process.",
        "",
        "| kind | clients | req/s | p50 ms | p99 ms | requests | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    Path(args.out).write_text("\n".join([*header, *rows]) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
