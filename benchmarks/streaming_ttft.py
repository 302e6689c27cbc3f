"""Time to first token of streamed misses: direct vs through the proxy.

    HF_HUB_OFFLINE=1 python benchmarks/streaming_ttft.py [--requests 40] [--out FILE]

Four processes on loopback: a fake OpenAI-compatible upstream that streams (a
role chunk at once, then one content chunk every 50 ms), two ``stagecache``
proxies (ONNX int8 embedder, structural verifier, memory backend, default chain
with its output guard; the second with the guard's e-mail detector off, the one
detector that holds back a plain first word) and this client. Every request asks a
new question (a miss); direct and proxied requests alternate. Per request it
records the time to the first SSE chunk, to the first chunk with text, and to the
last chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from stagecache.config import DEFAULT_STAGES

HERE = Path(__file__).resolve().parent
CONFIG = """
[embedder]
kind = "onnx"
quantize = "int8"

[verifier]
kind = "structural"
"""
# The default chain with the e-mail detector off: the only built-in detector that a
# plain trailing word ("Caches") could still turn into a match ("Caches@x.org"),
# so the only one that holds back the first word of an answer.
NO_EMAIL = "".join(
    f'[[stages]]\nkind = "{kind}"\n'
    + ('disable = ["pii.email"]\n' if kind == "output_guard" else "")
    for kind in DEFAULT_STAGES
)
KEY = "sk-bench"
INTERVAL_S = 0.05
PIECES = [
    " Caches",
    " keep",
    " answers",
    " close",
    " to",
    " where",
    " they",
    " are",
    " needed,",
    " so",
    " repeated",
    " questions",
    " return",
    " quickly.",
]


def _upstream_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    base = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1}

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        data = {**base, "model": "m", "choices": [choice]}
        return f"data: {json.dumps(data)}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        yield event({"role": "assistant", "content": ""})
        for piece in PIECES:
            await asyncio.sleep(INTERVAL_S)
            yield event({"content": piece})
        yield event({}, "stop")
        yield b"data: [DONE]\n\n"

    async def chat(request: Request) -> Response:
        # It checks keys, as OpenAI does: the proxy scopes the cache by the key.
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        body = json.loads(await request.body())
        if not body.get("messages"):
            return JSONResponse({"error": {"message": "no messages"}}, status_code=400)
        if not body.get("stream"):  # the whole answer once it is all there
            await asyncio.sleep(INTERVAL_S * len(PIECES))
            message = {"role": "assistant", "content": "".join(PIECES)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse(
                {**base, "object": "chat.completion", "model": "m", "choices": [choice]}
            )
        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
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


async def _one(http: httpx.AsyncClient, base: str, question: str) -> list[float]:
    """[first chunk, first text, last chunk] in seconds, and the outcome."""
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    headers = {"authorization": f"Bearer {KEY}", "x-stagecache-user": "bench"}
    t0 = time.perf_counter()
    first = text = last = float("nan")
    async with http.stream(
        "POST", base + "/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            now = time.perf_counter() - t0
            if first != first:  # nan: the first chunk
                first = now
            choices = json.loads(line[5:]).get("choices") or [{}]
            content = (choices[0].get("delta") or {}).get("content") or ""
            if text != text and content.strip():  # the first word, not a space
                text = now
            last = now
    return [first, text, last]


async def _whole(http: httpx.AsyncClient, base: str, question: str) -> list[float]:
    """A request with ``stream: false``: its latency in all three columns."""
    body = {"model": "m", "messages": [{"role": "user", "content": question}]}
    headers = {"authorization": f"Bearer {KEY}", "x-stagecache-user": "bench"}
    t0 = time.perf_counter()
    response = await http.post(base + "/chat/completions", json=body, headers=headers)
    response.raise_for_status()
    took = time.perf_counter() - t0
    return [took, took, took]


async def _bench(
    proxy: str, quiet_proxy: str, upstream: str, requests: int
) -> dict[str, list[list[float]]]:
    runs: dict[str, list[list[float]]] = {
        "direct": [],
        "proxy miss": [],
        "proxy miss, e-mail detector off": [],
        "direct, stream=false": [],
        "proxy miss, stream=false": [],
    }
    streamed = (
        ("direct", upstream),
        ("proxy miss", proxy),
        ("proxy miss, e-mail detector off", quiet_proxy),
    )
    async with httpx.AsyncClient(timeout=60) as http:
        for _, base in streamed:  # warm every path (connections, model)
            await _one(http, base, f"warm-up {uuid.uuid4().hex}")
        for _ in range(requests):
            for name, base in streamed:
                question = f"Tell me about topic {uuid.uuid4().hex}"
                runs[name].append(await _one(http, base, question))
        for _ in range(max(5, requests // 4)):
            for name, base in (
                ("direct, stream=false", upstream),
                ("proxy miss, stream=false", proxy),
            ):
                question = f"Tell me about topic {uuid.uuid4().hex}"
                runs[name].append(await _whole(http, base, question))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--role", choices=["bench", "upstream", "proxy"], default="bench"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream-port", type=int, default=0)
    parser.add_argument("--config", default="")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", default=str(HERE / "results" / "streaming.md"))
    args = parser.parse_args()
    if args.role == "upstream":
        import uvicorn

        uvicorn.run(_upstream_app(), port=args.port, log_level="warning")
        return 0
    if args.role == "proxy":
        from stagecache.integrations.proxy import serve_main

        return serve_main(
            [
                "--upstream",
                f"http://127.0.0.1:{args.upstream_port}/v1",
                "--port",
                str(args.port),
                "--config",
                args.config,
                "--log-level",
                "warning",
            ]
        )
    up_port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    me = [sys.executable, __file__]
    procs = [
        subprocess.Popen([*me, "--role", "upstream", "--port", str(up_port)], env=env)
    ]
    proxies: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, config in enumerate((CONFIG, CONFIG + NO_EMAIL)):
            path = Path(tmp) / f"proxy{n}.toml"
            path.write_text(config)
            port = _free_port()
            proxies.append(f"http://127.0.0.1:{port}/v1")
            command = [*me, "--role", "proxy", "--port", str(port)]
            command += ["--upstream-port", str(up_port), "--config", str(path)]
            procs.append(subprocess.Popen(command, env=env))
        try:
            upstream = f"http://127.0.0.1:{up_port}/v1"
            for proxy in proxies:
                asyncio.run(_wait(proxy.removesuffix("/v1") + "/healthz"))
            asyncio.run(_wait(upstream + "/models"))
            load = os.getloadavg()[0]
            runs = asyncio.run(_bench(*proxies, upstream, args.requests))
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    rows = []
    for name, values in runs.items():
        medians = [statistics.median(v[i] for v in values) * 1000 for i in range(3)]
        rows.append(
            f"| {name} | {len(values)} | "
            + " | ".join(f"{m:.1f}" for m in medians)
            + " |"
        )
    direct = [statistics.median(v[i] for v in runs["direct"]) for i in range(3)]
    proxied = [statistics.median(v[i] for v in runs["proxy miss"]) for i in range(3)]
    delta = [(p - d) * 1000 for p, d in zip(proxied, direct, strict=True)]
    rows.append("| proxy - direct | | " + " | ".join(f"{d:+.1f}" for d in delta) + " |")
    quiet = [
        statistics.median(v[i] for v in runs["proxy miss, e-mail detector off"])
        for i in range(3)
    ]
    quiet_delta = [(q - d) * 1000 for q, d in zip(quiet, direct, strict=True)]
    rows.append(
        "| proxy (e-mail detector off) - direct | | "
        + " | ".join(f"{d:+.1f}" for d in quiet_delta)
        + " |"
    )
    header = [
        "# Streaming: time to first token of a miss",
        "",
        f"`python benchmarks/streaming_ttft.py --requests {args.requests}` on "
        f"{platform.machine()}, {os.cpu_count()} CPUs visible, Python "
        f"{platform.python_version()}, load average {load:.1f} at the start; one "
        "run, medians. Upstream: a local fake that "
        f"streams a role chunk at once, then {len(PIECES)} content chunks, one every "
        f"{INTERVAL_S * 1000:.0f} ms. Proxy: ONNX int8 embedder, structural verifier, "
        "memory backend, default chain (output guard on); every request a new "
        'question (a miss); direct and proxied requests alternate. "first text": '
        "the first chunk with a word (the output guard holds a word back until "
        "what follows shows it is no e-mail address, card number, ...). The "
        "`stream=false` rows: the same answer in one body (all columns: its "
        "latency), for the proxy's overhead on a miss without streaming. The "
        '"e-mail detector off" proxy runs the same chain with the output guard\'s '
        '`disable = ["pii.email"]`: the only built-in detector that can still match '
        "a plain trailing word, so the only one that holds back the first word.",
        "",
        "| path | requests | first chunk ms | first text ms | last chunk ms |",
        "|---|---|---|---|---|",
    ]
    whole = [
        statistics.median(v[0] for v in runs[name]) * 1000
        for name in ("direct, stream=false", "proxy miss, stream=false")
    ]
    reading = [
        "",
        f"Reading: the first chunk comes {delta[0]:.1f} ms later through the proxy; "
        f"a miss without streaming costs {whole[1] - whole[0]:.1f} ms more through "
        "the proxy (the work before the model call: input guard, embedding the "
        "query, the cache lookup). The first word comes one upstream chunk later "
        "still when the first chunk ends in a word the output guard must hold "
        f"(a word may be the start of an e-mail address): {delta[1]:+.1f} ms for "
        f"the first text, {quiet_delta[1]:+.1f} ms with the e-mail detector off. "
        "Target: first chunk within 20 ms of direct at p50.",
    ]
    Path(args.out).write_text("\n".join([*header, *rows, *reading]) + "\n")
    print("\n".join(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
