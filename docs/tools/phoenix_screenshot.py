"""Screenshots of a stagecache trace in Arize Phoenix's UI, for docs/observability.md.

Starts ``phoenix serve`` (a throwaway SQLite working directory, free ports),
runs the default pipeline once for a miss (a model call) and once for a
paraphrase that the cache answers, exports both traces over OTLP/HTTP with
``setup_tracing``, finds them through Phoenix's GraphQL API, and has headless
Chromium render the trace pages, each with one span selected:

- ``phoenix-hit.png``: the hit's trace, its ``cache.hit`` span (a ``retriever``)
  with the similarity and what the hit saved in its metadata;
- ``phoenix-miss.png``: the miss's trace, its ``chat gpt-4o-mini`` LLM span with
  tokens and cost.

The PNGs are quantized to a 128-colour palette to stay small. Usage, from the
repository root with the project's venv (Phoenix in a venv of its own, Debian's
``chromium``)::

    STAGECACHE_PHOENIX=/work/phoenix-venv/bin/phoenix \\
        .venv/bin/python docs/tools/phoenix_screenshot.py --out docs/images
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

import stagecache
from stagecache.exporters import ModelPrice, OtlpConfig, setup_tracing
from stagecache.testing import ScriptedLLM

MODEL = "gpt-4o-mini"
PRICES = {MODEL: ModelPrice(input_per_1k=0.00015, output_per_1k=0.0006)}
SERVICE = "support-bot"
SPANS = """
query ($project: ID!) { node(id: $project) { ... on Project {
  spans(first: 100) { edges { node { id name trace { traceId } } } }
} } }
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def phoenix_server(executable: str, workdir: Path) -> Iterator[str]:
    """``phoenix serve`` on free local ports; yields its base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    with (workdir.parent / "phoenix.log").open("wb") as log:
        proc = subprocess.Popen(
            [executable, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 480
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"phoenix serve exited with {proc.returncode}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("phoenix serve did not start in 480 s")
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def send_traces(base: str) -> tuple[str, str]:
    """A miss and a hit of the default pipeline, exported to Phoenix: trace ids."""
    provider = setup_tracing(
        OtlpConfig(endpoint=base, protocol="http/protobuf", service_name=SERVICE,
                   schedule_delay_s=0.1, timeout_s=60, prices=PRICES)
    )  # fmt: skip
    llm = ScriptedLLM(lambda prompt: f"answer to: {prompt}", model_id=MODEL)
    pipeline = stagecache.Pipeline.default(llm=llm, tracer_provider=provider)
    for stage in pipeline.stages:  # a loaded host may embed slower than the 2 s
        if stage.name == "cache_check":
            stage.timeout_s = 60.0
    alice = stagecache.Caller(user_id="alice")
    try:
        async with pipeline:
            miss = await pipeline.run("How do I reset my password?", caller=alice,
                                      model=MODEL)  # fmt: skip
            hit = await pipeline.run("How can I reset my password?", caller=alice,
                                     model=MODEL)  # fmt: skip
    finally:
        provider.shutdown()
    if (miss.cache.status, hit.cache.status) != ("miss", "hit"):
        raise SystemExit(f"expected a miss and a hit, got {miss.cache} {hit.cache}")
    return miss.trace_id, hit.trace_id


def _graphql(base: str, query: str, **variables: Any) -> Any:
    r = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables},
                   timeout=30)  # fmt: skip
    r.raise_for_status()
    return r.json()["data"]


def find_spans(base: str, wanted: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(project id, {trace id: node id of the span named ``wanted[trace id]``})."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        projects = _graphql(base, "{ projects { edges { node { id name } } } }")
        for edge in projects["projects"]["edges"]:
            if edge["node"]["name"] != SERVICE:
                continue
            data = _graphql(base, SPANS, project=edge["node"]["id"])
            found = {
                n["trace"]["traceId"]: n["id"]
                for n in (e["node"] for e in data["node"]["spans"]["edges"])
                if wanted.get(n["trace"]["traceId"]) == n["name"]
            }
            if len(found) == len(wanted):
                return edge["node"]["id"], found
        time.sleep(0.5)
    raise SystemExit(f"Phoenix did not get the spans {wanted}")


def screenshot(chromium: str, url: str, out: Path, size: str) -> None:
    """Render ``url`` in headless Chromium (20 s of virtual time for the SPA)."""
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={size}", "--virtual-time-budget=20000",
         f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    from PIL import Image

    with Image.open(out) as image:
        small = image.convert("RGB").quantize(colors=128)
    small.save(out, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--phoenix",
        default=os.environ.get("STAGECACHE_PHOENIX"),
        help="the phoenix executable (default: $STAGECACHE_PHOENIX)",
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--size", default="1400,900", help="window WIDTH,HEIGHT")
    args = parser.parse_args()
    if not args.phoenix:
        parser.error("--phoenix or STAGECACHE_PHOENIX: the phoenix executable")
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        phoenix_server(args.phoenix, Path(tmp) / "phoenix") as base,
    ):
        miss, hit = asyncio.run(send_traces(base))
        project, spans = find_spans(base, {miss: f"chat {MODEL}", hit: "cache.hit"})
        for trace, name in ((hit, "phoenix-hit.png"), (miss, "phoenix-miss.png")):
            url = (f"{base}/projects/{project}/traces/{trace}"
                   f"?selectedSpanNodeId={spans[trace]}")  # fmt: skip
            screenshot(args.chromium, url, args.out / name, args.size)
            size = (args.out / name).stat().st_size
            print(f"{args.out / name}: {size // 1024} KB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
