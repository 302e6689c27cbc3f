"""The model call in OpenTelemetry's GenAI language; cache spans are no LLM calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GA
from opentelemetry.trace import SpanKind, StatusCode

from stagecache import Caller
from stagecache.errors import LLMError, StageError
from stagecache.testing import capture_spans

ALICE = Caller(user_id="alice")
QUESTION = "How do I reset my password?"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _by_trace(spans: Sequence[Any], trace_id: str) -> list[Any]:
    return [s for s in spans if format(s.context.trace_id, "032x") == trace_id]


@pytest.mark.anyio
async def test_model_call_is_a_genai_client_span_with_usage(make_pipeline: Any) -> None:
    cap = capture_spans()
    pipeline, _ = make_pipeline(tracer_provider=cap.provider)
    params = {"temperature": 0.3, "max_tokens": 50}
    async with pipeline:
        result = await pipeline.run(
            QUESTION, caller=ALICE, model="gpt-test", params=params
        )
    spans = _by_trace(cap.spans, result.trace_id)
    (chat,) = [s for s in spans if s.name == "chat gpt-test"]
    assert chat.attributes[GA.GEN_AI_REQUEST_TEMPERATURE] == 0.3
    assert chat.attributes[GA.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert chat.kind is SpanKind.CLIENT
    a = dict(chat.attributes or {})
    assert a[GA.GEN_AI_OPERATION_NAME] == "chat"
    assert a[GA.GEN_AI_PROVIDER_NAME]
    assert a[GA.GEN_AI_REQUEST_MODEL] == "gpt-test"
    assert a[GA.GEN_AI_RESPONSE_MODEL] == "scripted"
    assert tuple(a[GA.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)
    assert a[GA.GEN_AI_USAGE_INPUT_TOKENS] == result.usage.prompt_tokens > 0
    assert a[GA.GEN_AI_USAGE_OUTPUT_TOKENS] == result.usage.completion_tokens > 0
    parent = {s.context.span_id: s.name for s in spans}[chat.parent.span_id]
    assert parent == "stagecache.stage.llm"
    # Only the model call looks like a model call to a GenAI viewer.
    for span in spans:
        if span is not chat:
            keys = [k for k in (span.attributes or {}) if k.startswith("gen_ai.")]
            assert keys == [], (span.name, keys)
    root = next(s for s in spans if s.name == "stagecache.request")
    assert root.attributes["stagecache.model"] == "gpt-test"


@pytest.mark.anyio
async def test_a_hit_records_the_tokens_it_saved_and_makes_no_model_span(
    make_pipeline: Any,
) -> None:
    cap = capture_spans()
    pipeline, llm = make_pipeline(tracer_provider=cap.provider)
    async with pipeline:
        first = await pipeline.run(QUESTION, caller=ALICE, model="gpt-test")
        second = await pipeline.run(QUESTION, caller=ALICE, model="gpt-test")
    assert second.cache.status == "hit" and llm.calls == 1
    spans = _by_trace(cap.spans, second.trace_id)
    assert not [s for s in spans if s.name.startswith("chat ")]
    (hit,) = [s for s in spans if s.name == "cache.hit"]
    a = dict(hit.attributes or {})
    assert a["stagecache.saved.input_tokens"] == first.usage.prompt_tokens
    assert a["stagecache.saved.output_tokens"] == first.usage.completion_tokens
    assert a["stagecache.model"] == "gpt-test"


def _fails(prompt: str) -> str:
    raise LLMError("upstream answered 400: secret prompt echoed", status_code=400)


@pytest.mark.anyio
async def test_a_failed_model_call_has_one_exception_event_per_span(
    make_pipeline: Any,
) -> None:
    cap = capture_spans()
    pipeline, _ = make_pipeline(_fails, tracer_provider=cap.provider)
    async with pipeline:
        with pytest.raises(StageError):
            await pipeline.run(QUESTION, caller=ALICE, model="gpt-test")
    (chat,) = cap.named("chat gpt-test")
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.attributes["error.type"] == "LLMError"
    for span in cap.spans:
        events = [e for e in span.events if e.name == "exception"]
        assert len(events) <= 1, (span.name, len(events))
    assert len([e for e in chat.events if e.name == "exception"]) == 1
    (stage,) = cap.named("stagecache.stage.llm")
    assert len([e for e in stage.events if e.name == "exception"]) == 1


class _HungEmbedder:
    """The real model's identity, an ``embed`` that never returns."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def model_id(self) -> str:
        return str(self._inner.model_id)

    @property
    def dim(self) -> int:
        return int(self._inner.dim)

    async def embed(self, texts: Sequence[str]) -> Any:
        await anyio.sleep_forever()


@pytest.mark.anyio
async def test_a_hung_embedder_ends_as_a_cache_error_span(
    make_pipeline: Any, embedder: Any
) -> None:
    cap = capture_spans()
    pipeline, llm = make_pipeline(
        tracer_provider=cap.provider, embedder=_HungEmbedder(embedder)
    )
    for stage in pipeline.stages:
        if stage.name == "cache_check":
            stage.timeout_s = 0.3  # type: ignore[misc]
    async with pipeline:
        result = await pipeline.run(QUESTION, caller=ALICE)
    assert result.answer and llm.calls == 1
    assert result.cache.status == "error"
    assert not cap.named("cache.lookup")
    (span,) = cap.named("cache.error")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["cache.operation"] == "lookup"
    assert span.attributes["error.type"] == "TimeoutError"


# -- metrics -----------------------------------------------------------------------


def _metrics(reader: Any) -> dict[str, Any]:
    """name -> (metric, scope) of everything ``reader`` collected."""
    out: dict[str, Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out[metric.name] = (metric, sm.scope)
    return out


@pytest.mark.anyio
async def test_genai_client_metrics_units_scope_version_and_negative_similarity(
    make_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import stagecache
    from stagecache.exporters import MetricsRecorder
    from stagecache.pipeline import _events as ev

    reader = InMemoryMetricReader()
    recorder = MetricsRecorder(MeterProvider(metric_readers=[reader]))
    pipeline, _ = make_pipeline()
    pipeline.events.subscribe(recorder)
    async with pipeline:
        first = await pipeline.run(QUESTION, caller=ALICE, model="gpt-test")
    recorder(
        ev.CacheMiss(request_id="r", scope="s", scope_mode="per_user",
                     threshold=0.9, similarity=-0.25, model="m")
    )  # fmt: skip
    got = _metrics(reader)
    usage, scope = got["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    assert scope.version == stagecache.__version__
    points = usage.data.data_points
    types = {p.attributes["gen_ai.token.type"] for p in points}
    assert types == {"input", "output"}
    for p in points:
        assert p.attributes["gen_ai.operation.name"] == "chat"
        assert p.attributes["gen_ai.request.model"] == "gpt-test"
        assert p.attributes["gen_ai.response.model"] == "scripted"
        assert p.attributes["gen_ai.provider.name"]
        assert tuple(p.explicit_bounds)[:3] == (1, 4, 16)
    duration, _ = got["gen_ai.client.operation.duration"]
    assert duration.unit == "s" and duration.data.data_points[0].count == 1
    assert tuple(duration.data.data_points[0].explicit_bounds)[:2] == (0.01, 0.02)
    assert all(m.unit for m, _ in got.values()), [
        n for n, (m, _) in got.items() if not m.unit
    ]
    dist, _ = got["stagecache.cache.distance"]
    misses = [
        p for p in dist.data.data_points if p.attributes["cache.result"] == "miss"
    ]
    # The negative one is counted (as distance 1.25), beside the real miss's.
    assert sum(p.count for p in misses) == 1 + (first.cache.similarity is not None)
    assert max(p.max for p in misses) >= 1.25
    assert "non-negative" not in caplog.text


@pytest.mark.anyio
async def test_with_prices_the_model_span_has_its_cost_and_a_hit_what_it_saved(
    make_pipeline: Any,
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    from stagecache.exporters import ModelPrice, OtlpConfig, setup_tracing

    memory = InMemorySpanExporter()
    prices = {"gpt-test": ModelPrice(input_per_1k=1.0, output_per_1k=2.0)}
    provider = setup_tracing(OtlpConfig(prices=prices), exporter=memory)
    pipeline, _ = make_pipeline(tracer_provider=provider)
    async with pipeline:
        first = await pipeline.run(QUESTION, caller=ALICE, model="gpt-test")
        second = await pipeline.run(QUESTION, caller=ALICE, model="gpt-test")
    provider.shutdown()
    assert second.cache.status == "hit"
    usage = first.usage
    cost = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1000.0
    spans = memory.get_finished_spans()
    (chat,) = [s for s in spans if s.name == "chat gpt-test"]
    assert chat.attributes["stagecache.cost_usd"] == pytest.approx(cost)
    (hit,) = [s for s in spans if s.name == "cache.hit"]
    assert hit.attributes["stagecache.saved.cost_usd"] == pytest.approx(cost)


@pytest.mark.anyio
async def test_a_request_cancelled_during_the_lookup_ends_it_as_cancelled(
    make_pipeline: Any, embedder: Any
) -> None:
    cap = capture_spans()
    pipeline, llm = make_pipeline(
        tracer_provider=cap.provider, embedder=_HungEmbedder(embedder)
    )
    async with pipeline:
        with anyio.move_on_after(0.3):  # the caller gives up; the stage allows 2 s
            await pipeline.run(QUESTION, caller=ALICE)
    assert llm.calls == 0
    (span,) = cap.named("cache.error")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "Cancelled"
