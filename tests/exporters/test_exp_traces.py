"""Spans reach real OTLP receivers (gRPC and HTTP) with the right parent links."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from stagecache import Caller
from stagecache.exporters import HEALTH, OtlpConfig, setup_tracing

STAGES = {
    f"stagecache.stage.{n}" for n in ("input_guard", "cache_check", "llm", "store")
}


def _check_tree(spans: list[Any]) -> None:
    """One request: root span, four stage children, cache spans under the stages."""
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (root,) = [s for s in by_name["stagecache.request"] if not s.parent_span_id]
    stages = {s.name: s for s in spans if s.name in STAGES}
    assert set(stages) == STAGES
    for stage in stages.values():
        assert stage.parent_span_id == root.span_id
        assert stage.trace_id == root.trace_id
    (miss,) = by_name["cache.miss"]
    assert miss.parent_span_id == stages["stagecache.stage.cache_check"].span_id
    (store,) = by_name["cache.store"]
    assert store.parent_span_id == stages["stagecache.stage.store"].span_id
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["stagecache.model"].string_value == "gpt-test"
    assert attrs["stagecache.outcome"].string_value == "miss"
    miss_attrs = {a.key: a.value for a in miss.attributes}
    assert miss_attrs["cache.scope_mode"].string_value == "per_user"
    # The scope is a hash, never the raw user id.
    assert "alice" not in miss_attrs["cache.scope"].string_value


async def _one_request(receiver: Any, make_demo: Any, config: OtlpConfig) -> None:
    provider = setup_tracing(config)
    try:
        async with make_demo(provider, []) as pipeline:
            result = await pipeline.run(
                "reset password", caller=Caller(user_id="alice")
            )
        assert result.answer == "answer to: reset password"
        provider.force_flush()
    finally:
        provider.shutdown()
    spans = receiver.received.wait_for_spans({"stagecache.request", "cache.store"})
    _check_tree(spans)
    assert receiver.received.resources[0]["service.name"] == "stagecache-test"


@pytest.mark.anyio
async def test_grpc_receiver_gets_request_stage_and_cache_spans(
    grpc_receiver: Any, make_demo: Any
) -> None:
    config = OtlpConfig(
        endpoint=grpc_receiver.endpoint,
        protocol="grpc",
        service_name="stagecache-test",
        schedule_delay_s=0.1,
    )
    await _one_request(grpc_receiver, make_demo, config)


@pytest.mark.anyio
async def test_http_receiver_gets_request_stage_and_cache_spans(
    http_receiver: Any, make_demo: Any
) -> None:
    config = OtlpConfig(
        endpoint=http_receiver.endpoint,
        protocol="http/protobuf",
        service_name="stagecache-test",
        schedule_delay_s=0.1,
    )
    await _one_request(http_receiver, make_demo, config)


@pytest.mark.anyio
async def test_standard_otel_variables_choose_endpoint_protocol_and_service(
    http_receiver: Any, make_demo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "stagecache-test")
    await _one_request(http_receiver, make_demo, OtlpConfig(schedule_delay_s=0.1))


def test_traces_endpoint_variable_wins_over_the_base_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stagecache.exporters._otlpconfig import resolve_endpoint

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")
    assert resolve_endpoint(OtlpConfig(), "traces") == "http://t:1/x"
    assert resolve_endpoint(OtlpConfig(), "metrics") == "http://base:4318/v1/metrics"
    config = OtlpConfig(endpoint="http://cfg:4317", protocol="grpc")
    assert resolve_endpoint(config, "metrics") == "http://cfg:4317"


def test_unknown_protocol_variable_names_the_valid_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match=r"grpc, http/protobuf"):
        setup_tracing(OtlpConfig())


@pytest.mark.anyio
async def test_collector_down_never_fails_a_request_and_counts_failed_exports(
    make_demo: Any, unused_port: int
) -> None:
    before = HEALTH.snapshot()["failed"].get("traces", 0)
    config = OtlpConfig(
        endpoint=f"http://127.0.0.1:{unused_port}",  # nothing listens there
        protocol="http/protobuf",
        timeout_s=0.5,
        schedule_delay_s=0.05,
    )
    provider = setup_tracing(config)
    try:
        async with make_demo(provider, []) as pipeline:
            for i in range(3):
                result = await pipeline.run(f"q{i}", caller=Caller(user_id="bob"))
                assert result.answer == f"answer to: q{i}"
        provider.force_flush()
    finally:
        provider.shutdown()
    assert HEALTH.snapshot()["failed"]["traces"] > before


class _StuckExporter:
    """A span exporter that never finishes until released: a hung collector."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    def export(self, spans: Any) -> SpanExportResult:
        self.release.wait(10)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@pytest.mark.anyio
async def test_full_queue_drops_spans_counts_them_and_requests_go_on(
    make_demo: Any,
) -> None:
    before = HEALTH.snapshot()["dropped"].get("traces", 0)
    stuck = _StuckExporter()
    config = OtlpConfig(
        max_queue_size=4, max_export_batch_size=2, schedule_delay_s=0.05
    )
    provider = setup_tracing(config, exporter=stuck)  # type: ignore[arg-type]
    try:
        async with make_demo(provider, []) as pipeline:
            for i in range(10):
                result = await pipeline.run(f"q{i}", caller=Caller(user_id="carol"))
                assert result.answer == f"answer to: q{i}"
    finally:
        stuck.release.set()
        provider.shutdown()
    # 10 requests x 7 spans, a queue of 4 and an exporter that holds one batch.
    assert HEALTH.snapshot()["dropped"]["traces"] - before >= 50
