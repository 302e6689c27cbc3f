"""The viewer check: a real trace in Arize Phoenix, read back through its API.

Phoenix (PyPI ``arize-phoenix``, an OTLP trace store with an LLM-trace UI) has
many dependencies, so it lives in a virtual environment of its own:

    python3 -m venv /work/phoenix-venv
    /work/phoenix-venv/bin/pip install arize-phoenix
    export STAGECACHE_PHOENIX=/work/phoenix-venv/bin/phoenix
    pytest tests/exporters/test_exp_phoenix.py

``STAGECACHE_PHOENIX`` names the ``phoenix`` executable (or the venv holding it);
without it the test is skipped. It starts ``phoenix serve`` on free ports with a
throwaway SQLite working directory, sends a pipeline miss (a model call) and a
hit over OTLP/HTTP with ``setup_tracing``, and reads the spans back through
Phoenix's GraphQL API.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stagecache import Caller
from stagecache.exporters import ModelPrice, OtlpConfig, setup_tracing
from stagecache.testing import ScriptedLLM
from tests.exporters.conftest import free_port

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # Phoenix's first start migrates its database
    pytest.mark.skipif(
        not os.environ.get("STAGECACHE_PHOENIX"),
        reason="STAGECACHE_PHOENIX is not set: install arize-phoenix in a venv of its "
        "own and set STAGECACHE_PHOENIX=<venv>/bin/phoenix to run the viewer check",
    ),
]

MODEL = "gpt-4o-mini"  # in Phoenix's built-in price table
#: OpenAI's list price of gpt-4o-mini (USD per 1k tokens).
PRICES = {MODEL: ModelPrice(input_per_1k=0.00015, output_per_1k=0.0006)}
SERVICE = "stagecache-viewer-check"

SPANS = """
query ($project: ID!) { node(id: $project) { ... on Project {
  spans(first: 200) { edges { node {
    name spanKind metadata attributes parentId
    tokenCountPrompt tokenCountCompletion
    costSummary { total { cost tokens } }
    trace { traceId }
  } } }
} } }
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _executable() -> Path:
    value = os.environ["STAGECACHE_PHOENIX"]
    path = Path(value)
    if path.is_dir():
        path = path / "bin" / "phoenix"
    if not path.is_file():
        pytest.skip(f"STAGECACHE_PHOENIX={value}: no phoenix executable at {path}")
    return path


@pytest.fixture
def phoenix(tmp_path: Path) -> Iterator[str]:
    """A running ``phoenix serve``: its base URL (OTLP/HTTP, GraphQL and UI)."""
    executable = _executable()
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = (tmp_path / "phoenix.log").open("wb")
    proc = subprocess.Popen(
        [str(executable), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 480  # migrations take minutes on a busy host
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"phoenix serve exited ({proc.returncode}): "
                    + (tmp_path / "phoenix.log").read_text(errors="replace")[-2000:]
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("phoenix serve did not become healthy in 480 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _graphql(base: str, query: str, **variables: Any) -> Any:
    r = httpx.post(f"{base}/graphql", json={"query": query, "variables": variables},
                   timeout=30)  # fmt: skip
    body = r.json()
    assert r.status_code == 200 and not body.get("errors"), body
    return body["data"]


def _spans(base: str, traces: set[str], timeout: float = 90.0) -> tuple[str, list[Any]]:
    """(project name, the spans of ``traces``) once both traces are complete.

    The spans are looked for in every project, so that a trace filed under
    ``default`` (no ``openinference.project.name``) fails on the assertions
    about the project, not on a time-out.
    """
    deadline = time.monotonic() + timeout
    while True:
        projects = _graphql(base, "{ projects { edges { node { id name } } } }")
        for edge in projects["projects"]["edges"]:
            data = _graphql(base, SPANS, project=edge["node"]["id"])
            spans = [e["node"] for e in data["node"]["spans"]["edges"]
                     if e["node"]["trace"]["traceId"] in traces]  # fmt: skip
            roots = {s["trace"]["traceId"] for s in spans
                     if s["name"] == "stagecache.request"}  # fmt: skip
            if roots == traces:
                return edge["node"]["name"], spans
        if time.monotonic() > deadline:
            raise AssertionError(f"Phoenix did not get the traces {traces}")
        time.sleep(0.5)


def _one(spans: list[dict[str, Any]], name: str, trace: str) -> dict[str, Any]:
    (span,) = [s for s in spans if s["name"] == name and s["trace"]["traceId"] == trace]
    return span


async def test_phoenix_shows_the_model_call_as_an_llm_span_and_the_hit_as_a_cache_hit(
    phoenix: str, make_pipeline: Any
) -> None:
    provider = setup_tracing(
        OtlpConfig(endpoint=phoenix, protocol="http/protobuf", service_name=SERVICE,
                   schedule_delay_s=0.1, timeout_s=60, prices=PRICES)
    )  # fmt: skip
    llm = ScriptedLLM(lambda prompt: f"answer to: {prompt}", model_id=MODEL)
    pipeline, _ = make_pipeline(llm=llm, tracer_provider=provider)
    for stage in pipeline.stages:  # a loaded host may embed slower than the 2 s
        if stage.name == "cache_check":
            stage.timeout_s = 60.0  # type: ignore[misc]
    alice = Caller(user_id="alice")
    try:
        async with pipeline:
            miss = await pipeline.run("How do I reset my password?", caller=alice,
                                      model=MODEL)  # fmt: skip
            hit = await pipeline.run("How can I reset my password?", caller=alice,
                                     model=MODEL)  # fmt: skip
    finally:
        provider.shutdown()  # flushes the last spans to Phoenix
    assert miss.cache.status == "miss" and hit.cache.status == "hit"
    project, spans = _spans(phoenix, {miss.trace_id, hit.trace_id})

    # The model call: an LLM span with the call's tokens, priced by Phoenix.
    (chat,) = [s for s in spans if s["spanKind"] == "llm"]
    assert chat["name"] == f"chat {MODEL}"
    assert chat["trace"]["traceId"] == miss.trace_id
    assert chat["tokenCountPrompt"] == miss.usage.prompt_tokens > 0
    assert chat["tokenCountCompletion"] == miss.usage.completion_tokens > 0
    assert chat["costSummary"]["total"]["cost"] > 0
    attributes = json.loads(chat["attributes"])
    assert attributes["stagecache"]["cost_usd"] == pytest.approx(
        (miss.usage.prompt_tokens * 0.00015 + miss.usage.completion_tokens * 0.0006)
        / 1000
    )

    # Nothing else looks like a model call; the stagecache spans have a kind.
    assert {s["spanKind"] for s in spans} <= {"llm", "chain", "retriever", "guardrail"}

    # The hit: its request says so, and its cache.hit span says what it saved.
    hit_root = _one(spans, "stagecache.request", hit.trace_id)
    assert hit_root["spanKind"] == "chain"
    assert json.loads(hit_root["metadata"])["cache.status"] == "hit"
    miss_root = _one(spans, "stagecache.request", miss.trace_id)
    assert json.loads(miss_root["metadata"])["cache.status"] == "miss"
    lookup = _one(spans, "cache.hit", hit.trace_id)
    assert lookup["spanKind"] == "retriever"
    saved = json.loads(lookup["metadata"])
    assert saved["cache.similarity"] >= saved["cache.threshold"]
    assert saved["stagecache.saved.input_tokens"] == miss.usage.prompt_tokens
    assert saved["stagecache.saved.output_tokens"] == miss.usage.completion_tokens
    assert saved["stagecache.saved.cost_usd"] == pytest.approx(
        attributes["stagecache"]["cost_usd"]
    )
    # The hit made no model call: no LLM span, no cost in its trace.
    in_hit = [s for s in spans if s["trace"]["traceId"] == hit.trace_id]
    assert not [s for s in in_hit if s["spanKind"] == "llm"]
    assert all(s["costSummary"] is None for s in in_hit)
    # Filed under a project named after the service.
    assert project == SERVICE
