"""OpenInference span kinds and metadata on exported spans (what Phoenix reads).

The viewer itself is checked by the slow ``test_exp_phoenix.py``; these tests
check what ``setup_tracing`` exports, with the default pipeline and a real model.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stagecache import Caller
from stagecache.exporters import ModelPrice, OtlpConfig, setup_tracing

ALICE = Caller(user_id="alice")
PRICES = {"gpt-test": ModelPrice(input_per_1k=1.0, output_per_1k=2.0)}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _miss_and_hit(make_pipeline: Any, config: OtlpConfig) -> tuple[Any, ...]:
    memory = InMemorySpanExporter()
    provider = setup_tracing(config, exporter=memory)
    pipeline, _ = make_pipeline(tracer_provider=provider)
    for stage in pipeline.stages:  # a loaded host may embed slower than the 2 s
        if stage.name == "cache_check":
            stage.timeout_s = 60.0  # type: ignore[misc]
    async with pipeline:
        miss = await pipeline.run("How do I reset my password?", caller=ALICE,
                                  model="gpt-test")  # fmt: skip
        hit = await pipeline.run("How can I reset my password?", caller=ALICE,
                                 model="gpt-test")  # fmt: skip
    provider.shutdown()
    assert (miss.cache.status, hit.cache.status) == ("miss", "hit")
    return miss, hit, memory.get_finished_spans(), provider


@pytest.mark.anyio
async def test_spans_gain_their_openinference_kind_and_cache_metadata(
    make_pipeline: Any,
) -> None:
    config = OtlpConfig(service_name="support-bot", prices=PRICES)
    miss, hit, spans, provider = await _miss_and_hit(make_pipeline, config)
    kinds = {s.name: s.attributes.get("openinference.span.kind") for s in spans}
    assert kinds["chat gpt-test"] == "LLM"
    assert kinds["stagecache.request"] == "CHAIN"
    assert kinds["stagecache.stage.cache_check"] == "CHAIN"
    assert kinds["stagecache.stage.input_guard"] == "GUARDRAIL"
    assert kinds["stagecache.stage.output_guard"] == "GUARDRAIL"
    assert kinds["cache.hit"] == kinds["cache.miss"] == "RETRIEVER"
    assert kinds["cache.store"] == "CHAIN"
    assert None not in kinds.values(), kinds

    def metadata(name: str, trace_id: str) -> dict[str, Any]:
        (span,) = [s for s in spans if s.name == name
                   and format(s.context.trace_id, "032x") == trace_id]  # fmt: skip
        return dict(json.loads(span.attributes["metadata"]))

    assert metadata("stagecache.request", hit.trace_id) == {
        "cache.status": "hit",
        "stagecache.outcome": "hit",
    }
    assert metadata("stagecache.request", miss.trace_id)["cache.status"] == "miss"
    saved = metadata("cache.hit", hit.trace_id)
    assert saved["cache.similarity"] == pytest.approx(hit.cache.similarity)
    assert saved["cache.threshold"] == pytest.approx(hit.cache.threshold)
    assert saved["stagecache.saved.input_tokens"] == miss.usage.prompt_tokens
    # Priced before annotated: the saved cost is in the metadata too.
    cost = (miss.usage.prompt_tokens * 1.0 + miss.usage.completion_tokens * 2.0) / 1e3
    assert saved["stagecache.saved.cost_usd"] == pytest.approx(cost)
    assert "metadata" not in {
        k for s in spans if s.name.startswith("stagecache.stage.") for k in s.attributes
    }
    # Phoenix files the spans under a project named after the service.
    resource = provider.resource.attributes
    assert resource["openinference.project.name"] == "support-bot"


@pytest.mark.anyio
async def test_openinference_false_exports_the_spans_as_they_are(
    make_pipeline: Any,
) -> None:
    config = OtlpConfig(openinference=False)
    _, _, spans, provider = await _miss_and_hit(make_pipeline, config)
    keys = {k for s in spans for k in s.attributes}
    assert "openinference.span.kind" not in keys and "metadata" not in keys
    assert "openinference.project.name" not in provider.resource.attributes


def test_a_kind_or_metadata_already_set_is_kept_and_foreign_spans_pass() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from stagecache.exporters._openinference import OpenInferenceSpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OpenInferenceSpanExporter(memory)))
    tracer = provider.get_tracer("host")
    with tracer.start_as_current_span("cache.hit") as span:
        span.set_attribute("openinference.span.kind", "TOOL")
        span.set_attribute("metadata", '{"mine": 1}')
        span.set_attribute("cache.similarity", 0.95)
    with tracer.start_as_current_span("http.request") as span:
        span.set_attribute("cache.status", "hit")  # not a stagecache span
    with tracer.start_as_current_span("cache.miss") as span:
        span.set_attribute("cache.query", "raw text, opted in")
        span.set_attribute("cache.threshold", 0.9)
    own, foreign, opted = memory.get_finished_spans()
    assert own.attributes["openinference.span.kind"] == "TOOL"
    assert own.attributes["metadata"] == '{"mine": 1}'
    assert "openinference.span.kind" not in foreign.attributes
    assert "metadata" not in foreign.attributes
    assert json.loads(opted.attributes["metadata"]) == {"cache.threshold": 0.9}
