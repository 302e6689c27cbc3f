"""Metrics: the Prometheus endpoint over real HTTP, OTLP metrics to a receiver."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from stagecache import Caller
from stagecache.exporters import (
    MetricsRecorder,
    ModelPrice,
    OtlpConfig,
    OtlpExporter,
    PrometheusConfig,
    PrometheusExporter,
)
from stagecache.pipeline import _events as ev


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    result = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = frozenset(
                (k, v) for k, v in s.labels.items() if not k.startswith("otel_")
            )
            result[(s.name, labels)] = s.value
    return result


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


@pytest.mark.anyio
async def test_prometheus_endpoint_serves_request_cache_and_savings_metrics(
    make_demo: Any, drive: Any
) -> None:
    prices = {"gpt-test": ModelPrice(input_per_1k=1.0, output_per_1k=2.0)}
    exporter = PrometheusExporter(PrometheusConfig(port=0, prices=prices))
    async with make_demo(None, [exporter]) as pipeline:
        await drive(pipeline)
        async with httpx.AsyncClient() as client:
            response = await client.get(exporter.url)
    assert response.status_code == 200
    s = _samples(response.text)
    assert _value(s, "stagecache_requests_total", stagecache_outcome="hit") == 3
    assert _value(s, "stagecache_requests_total", stagecache_outcome="miss") == 4
    assert _value(s, "stagecache_requests_total", stagecache_outcome="skip") == 1
    assert _value(s, "stagecache_requests_total", stagecache_outcome="blocked") == 1
    assert _value(s, "stagecache_cache_distance_count", cache_result="hit") == 3
    assert _value(s, "stagecache_llm_calls_saved_total") == 3
    # Each hit saves the stored call's usage: 100 input + 50 output tokens.
    assert (
        _value(s, "stagecache_llm_tokens_saved_total", gen_ai_token_type="input") == 300
    )
    assert _value(s, "stagecache_llm_cost_saved_usd_total") == pytest.approx(
        3 * (100 * 1.0 + 50 * 2.0) / 1000
    )
    assert _value(s, "stagecache_cache_entries", cache_scope_mode="per_user") == 4
    assert _value(s, "stagecache_cache_evictions_total", cache_reason="ttl") == 2
    assert (
        _value(s, "stagecache_embedding_cache_lookups_total", cache_result="hit") == 3
    )
    assert _value(s, "stagecache_stage_duration_seconds_count", stagecache_stage="llm")
    assert (
        _value(s, "stagecache_stage_failures_total", stagecache_stage="cache_check")
        == 1
    )
    # Nothing raw about users: no label carries the user id.
    assert "alice" not in response.text


@pytest.mark.anyio
async def test_prometheus_server_stops_on_aclose(make_demo: Any) -> None:
    exporter = PrometheusExporter(PrometheusConfig(port=0))
    async with make_demo(None, [exporter]):
        url = exporter.url
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


@pytest.mark.anyio
async def test_otlp_metrics_reach_a_grpc_receiver(
    grpc_receiver: Any, make_demo: Any
) -> None:
    config = OtlpConfig(
        endpoint=grpc_receiver.endpoint, protocol="grpc", export_interval_s=60
    )
    exporter = OtlpExporter(config)
    async with make_demo(None, [exporter]) as pipeline:
        await pipeline.run("hello", caller=Caller(user_id="dan"))
        await pipeline.run("hello", caller=Caller(user_id="dan"))
    # aclose() flushed the last numbers.
    names = grpc_receiver.received.wait_for_metrics(
        {"stagecache.requests", "stagecache.cache.distance", "stagecache.llm.calls"}
    )
    assert "stagecache.stage.duration" in names


@pytest.mark.anyio
async def test_otlp_metrics_to_a_down_collector_count_failures(
    make_demo: Any, unused_port: int
) -> None:
    from stagecache.exporters import HEALTH

    before = HEALTH.snapshot()["failed"].get("metrics", 0)
    config = OtlpConfig(
        endpoint=f"http://127.0.0.1:{unused_port}",
        protocol="http/protobuf",
        timeout_s=0.5,
        export_interval_s=60,
    )
    async with make_demo(None, [OtlpExporter(config)]) as pipeline:
        result = await pipeline.run("hello", caller=Caller(user_id="eve"))
        assert result.answer == "answer to: hello"
    assert HEALTH.snapshot()["failed"]["metrics"] > before


def _recorder(**kwargs: Any) -> tuple[MetricsRecorder, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MetricsRecorder(MeterProvider(metric_readers=[reader]), **kwargs), reader


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


def test_cost_saved_falls_back_to_answer_length_and_the_wildcard_price() -> None:
    prices = {"*": ModelPrice(input_per_1k=0.0, output_per_1k=10.0)}
    recorder, reader = _recorder(prices=prices)
    # Stored without a model call seen in this process: 400 chars -> 100 tokens.
    recorder(ev.CacheStore(scope="s", scope_mode="shared", entry_id="x", ttl_s=1,
                           answer_chars=400))  # fmt: skip
    hit = ev.CacheHit(scope="s", scope_mode="shared", similarity=0.95,
                      threshold=0.92, entry_id="x", entry_age_s=1,
                      model="m")  # fmt: skip
    recorder(hit)
    (point,) = _points(reader, "stagecache.llm.cost_saved_usd")
    assert point.value == pytest.approx(100 * 10.0 / 1000)


def test_entries_per_scope_mode_follow_stores_and_evictions() -> None:
    recorder, reader = _recorder()
    for i in range(3):
        recorder(ev.CacheStore(scope="a", scope_mode="per_user", entry_id=f"a{i}",
                               ttl_s=1))  # fmt: skip
    recorder(ev.CacheStore(scope="b", scope_mode="shared", entry_id="b", ttl_s=1))
    recorder(ev.CacheEvicted(reason="lru", count=1, scope="a"))
    recorder(ev.Invalidated(scope="b", count=1))
    entries = {
        p.attributes["cache.scope_mode"]: p.value
        for p in _points(reader, "stagecache.cache.entries")
    }
    assert entries == {"per_user": 2, "per_session": 0, "shared": 0}


def test_a_recorder_bug_never_reaches_the_bus() -> None:
    recorder, _ = _recorder()
    bad = ev.LLMCall(model="m", latency_s=-1.0, prompt_tokens=-5)  # counters refuse
    recorder(bad)  # logged, not raised


@pytest.mark.anyio
async def test_a_taken_port_is_a_config_error_naming_the_setting_or_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    from stagecache.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        strict = PrometheusExporter(PrometheusConfig(port=port))
        with pytest.raises(ConfigError) as info:
            await strict.warm_up()
        assert info.value.field == "prometheus.port"
        assert "required = false" in str(info.value)
        await strict.aclose()
        lenient = PrometheusExporter(PrometheusConfig(port=port, required=False))
        await lenient.warm_up()  # starts without the endpoint
        lenient(ev.LLMCall(request_id="r", model="m", latency_s=0.1))
        assert b"stagecache_llm_calls_total" in lenient.scrape()
        await lenient.aclose()
    assert "prometheus endpoint not started" in caplog.text


def test_negative_similarities_are_recorded_as_cosine_distance_with_an_honest_sum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every cosine in [-1, 1] is recorded as 1 - cos in [0, 2]: nothing clamped."""
    recorder, reader = _recorder()
    miss = {"scope": "s", "scope_mode": "shared", "threshold": 0.9, "model": "m"}
    for cosine in (-0.25, -1.0, 0.5):
        recorder(ev.CacheMiss(request_id="r", similarity=cosine, **miss))
    recorder(ev.CacheHit(scope="s", scope_mode="shared", similarity=0.96,
                         threshold=0.9, entry_id="x", entry_age_s=1,
                         model="m"))  # fmt: skip
    points = {
        p.attributes["cache.result"]: p
        for p in _points(reader, "stagecache.cache.distance")
    }
    misses, hits = points["miss"], points["hit"]
    assert misses.count == 3
    # 1.25 + 2.0 + 0.5: the negative cosines are in the sum, not clamped to 0.
    assert misses.sum == pytest.approx(3.75)
    assert misses.max == pytest.approx(2.0) and misses.min == pytest.approx(0.5)
    assert hits.count == 1 and hits.sum == pytest.approx(0.04)
    bounds = tuple(misses.explicit_bounds)
    assert bounds[0] == 0.0 and bounds[-1] == 2.0
    # Both negative cosines land above distance 1, the boundary of cosine 0.
    over_one = sum(
        n
        for n, lower in zip(misses.bucket_counts[1:], bounds, strict=False)
        if lower >= 1.0
    )
    assert over_one == 2
    assert "non-negative" not in caplog.text
