"""The default seven-stage pipeline, traced to a real gRPC receiver and scraped."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import stagecache
from stagecache.exporters import (
    OtlpConfig,
    PrometheusConfig,
    PrometheusExporter,
    setup_tracing,
)
from stagecache.testing import ScriptedLLM


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_default_pipeline_cache_spans_are_traced_and_counted(
    grpc_receiver: Any, anyio_backend: str
) -> None:
    provider = setup_tracing(
        OtlpConfig(endpoint=grpc_receiver.endpoint, protocol="grpc",
                   schedule_delay_s=0.1)
    )  # fmt: skip
    exporter = PrometheusExporter(PrometheusConfig(port=0))
    llm = ScriptedLLM(lambda prompt: f"answer to: {prompt}")
    pipeline = stagecache.Pipeline.default(llm=llm, tracer_provider=provider)
    pipeline.events.subscribe(exporter)
    caller = stagecache.Caller(user_id="alice")
    try:
        await exporter.warm_up()
        async with pipeline:
            first = await pipeline.run("How do I reset my password?", caller=caller)
            second = await pipeline.run("How do I reset my password?", caller=caller)
        async with httpx.AsyncClient() as client:
            text = (await client.get(exporter.url)).text
    finally:
        await exporter.aclose()
        provider.shutdown()
    assert first.cache.status == "miss" and first.cache.stored
    spans = grpc_receiver.received.wait_for_spans({"cache.miss", "cache.store"})
    by_id = {s.span_id: s for s in spans}
    first_trace = [s for s in spans if s.trace_id.hex() == first.trace_id]
    parents = {
        s.name: by_id[s.parent_span_id].name
        for s in first_trace
        if s.name in ("cache.miss", "cache.store")
    }
    assert parents == {
        "cache.miss": "stagecache.stage.cache_check",
        "cache.store": "stagecache.stage.store",
    }
    (root,) = [s for s in first_trace if s.name == "stagecache.request"]
    assert not root.parent_span_id
    stages = [s for s in first_trace if s.name.startswith("stagecache.stage.")]
    assert len(stages) == 7 and all(s.parent_span_id == root.span_id for s in stages)
    assert f'stagecache_outcome="{second.cache.status}"' in text
    assert "alice" not in text
