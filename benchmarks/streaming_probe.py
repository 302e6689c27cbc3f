"""Where a streamed miss spends its time in the proxy, for several embedder settings.

    HF_HUB_OFFLINE=1 python benchmarks/streaming_probe.py [--requests 20]

The fake upstream of ``streaming_ttft.py`` and one proxy per variant (``default``:
the benchmark's config; ``spinning``: ``[embedder] spinning = true``, onnxruntime's
own default; ``threads1``: ``[embedder] threads = 1``), all at once, so that every
variant sees the same load. The client sends each round one streamed miss directly
and one to every proxy, in a random order. Inside each proxy a probe records, per
request, the wall time (``perf_counter``) and the process's CPU time
(``process_time``, every thread) at the embedding's start and end, the upstream send
and the first upstream chunk; the table gives medians. On a shared machine, read the
variants against each other, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from streaming_ttft import CONFIG, _free_port, _one, _wait

VARIANTS = {
    "default": "",
    "spinning": "spinning = true\n",
    "threads1": "threads = 1\n",
}
MARKS = ("embed>", "embed<", "send", "first_chunk")


def _append(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _probe_proxy(argv: list[str], out: str) -> int:
    """Run ``stagecache serve`` with timing marks around the miss path."""
    from stagecache.embeddings import _onnx
    from stagecache.integrations import _proxy_stream, _proxy_stream_upstream
    from stagecache.integrations import proxy as proxy_module
    from stagecache.pipeline import _runner

    rec: dict[str, Any] = {}

    def mark(name: str) -> None:
        if "_t0" in rec:
            wall = (time.perf_counter() - rec["_t0"]) * 1e3
            cpu = (time.process_time() - rec["_c0"]) * 1e3
            rec[name] = [round(wall, 2), round(cpu, 2)]

    chat = proxy_module._Proxy.chat

    async def probed_chat(self: Any, request: Any) -> Any:
        rec.clear()
        rec["_t0"], rec["_c0"] = time.perf_counter(), time.process_time()
        return await chat(self, request)

    run_stage = _runner.Runner._run_stage

    async def probed_stage(self: Any, stage: Any, turn: Any) -> Any:
        mark(f"{stage.name}>")
        result = await run_stage(self, stage, turn)
        mark(f"{stage.name}<")
        if stage.name == "llm" and "_t0" in rec:
            _append(out, {k: v for k, v in rec.items() if k[0] != "_"})
            rec.clear()
        return result

    embed = _onnx.OnnxEmbedder.embed

    async def probed_embed(self: Any, texts: Any) -> Any:
        mark("embed>")
        vectors = await embed(self, texts)
        mark("embed<")
        return vectors

    stream = _proxy_stream_upstream.stream_completion

    async def probed_stream(model: Any, request: Any, turn: Any, body: Any) -> Any:
        mark("send")
        return await stream(model, request, turn, body)

    start = _proxy_stream.LiveStream.start

    def probed_start(self: Any, turn: Any) -> None:
        mark("first_chunk")
        start(self, turn)

    proxy_module._Proxy.chat = probed_chat  # type: ignore[method-assign]
    _runner.Runner._run_stage = probed_stage  # type: ignore[method-assign]
    _onnx.OnnxEmbedder.embed = probed_embed  # type: ignore[method-assign]
    _proxy_stream_upstream.stream_completion = probed_stream
    _proxy_stream.LiveStream.start = probed_start  # type: ignore[method-assign]
    return proxy_module.serve_main(argv)


async def _client(
    bases: dict[str, str], requests: int, seed: int
) -> dict[str, list[float]]:
    rng = random.Random(seed)
    firsts: dict[str, list[float]] = {name: [] for name in bases}
    async with httpx.AsyncClient(timeout=60) as http:
        for base in bases.values():
            await _one(http, base, f"warm-up {uuid.uuid4().hex}")
        for _ in range(requests):
            order = list(bases.items())
            rng.shuffle(order)
            for name, base in order:
                question = f"Tell me about topic {uuid.uuid4().hex}"
                firsts[name].append((await _one(http, base, question))[0] * 1e3)
    return firsts


def _table(
    firsts: dict[str, list[float]], folder: Path, variants: list[str]
) -> list[str]:
    direct = statistics.median(firsts["direct"])
    rows = [
        "| proxy | first-chunk gap | embedding wall | embedding CPU "
        "| send -> first upstream chunk | CPU to first chunk |",
        "|---|---|---|---|---|---|",
    ]
    for name in variants:
        lines = (folder / f"{name}.jsonl").read_text().splitlines()
        recs = [json.loads(line) for line in lines[1:]]  # [0]: the warm-up
        recs = [r for r in recs if all(m in r for m in MARKS)]

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.1f} ms" if values else "-"

        rows.append(
            f"| {name} | {statistics.median(firsts[name]) - direct:+.1f} ms | "
            + " | ".join(
                [
                    med([r["embed<"][0] - r["embed>"][0] for r in recs]),
                    med([r["embed<"][1] - r["embed>"][1] for r in recs]),
                    med([r["first_chunk"][0] - r["send"][0] for r in recs]),
                    med([r["first_chunk"][1] for r in recs]),
                ]
            )
            + " |"
        )
    rows.append(f"\ndirect first chunk: {direct:.1f} ms (median)")
    for name in variants:  # every point of the path: stage starts (>) and ends (<)
        lines = (folder / f"{name}.jsonl").read_text().splitlines()
        recs = [json.loads(line) for line in lines[1:]]
        points = {key for r in recs for key in r}
        order = sorted(
            points, key=lambda k: statistics.median(r[k][0] for r in recs if k in r)
        )
        rows += ["", f"{name}: ms since the request reached the handler", ""]
        rows += ["| point | wall | CPU |", "|---|---|---|"]
        for key in order:
            values = [r[key] for r in recs if key in r]
            wall = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            rows.append(f"| {key} | {wall:.2f} | {cpu:.2f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--probe-out", default="")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="a comma-separated subset"
    )
    args, rest = parser.parse_known_args()
    if args.probe_out:  # the proxy role: the rest are serve arguments
        return _probe_proxy(rest, args.probe_out)
    here = Path(__file__).resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    up_port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(here.parent / "streaming_ttft.py"),
                    "--role",
                    "upstream",
                    "--port",
                    str(up_port),
                ],
                env=env,
            )
        ]
        upstream = f"http://127.0.0.1:{up_port}/v1"
        bases = {"direct": upstream}
        chosen = args.variants.split(",")
        unknown = set(chosen) - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}")
        for name in chosen:
            extra = VARIANTS[name]
            config = folder / f"{name}.toml"
            config.write_text(
                CONFIG.replace('quantize = "int8"\n', f'quantize = "int8"\n{extra}')
            )
            port = _free_port()
            bases[name] = f"http://127.0.0.1:{port}/v1"
            command = [
                sys.executable,
                str(here),
                "--probe-out",
                str(folder / f"{name}.jsonl"),
            ]
            command += ["--upstream", upstream, "--port", str(port)]
            command += ["--config", str(config), "--log-level", "warning"]
            procs.append(subprocess.Popen(command, env=env))
        try:
            for base in bases.values():
                root = base.removesuffix("/v1")
                asyncio.run(
                    _wait(root + ("/healthz" if base != upstream else "/v1/models"))
                )
            firsts = asyncio.run(_client(bases, args.requests, args.seed))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
        print(f"load average before the table: {os.getloadavg()[0]:.1f}")
        print("\n".join(_table(firsts, folder, chosen)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
