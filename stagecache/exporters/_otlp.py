"""Metrics over OTLP (``kind = "otlp"``), and the config that also sets up traces.

An ``[[exporters]]`` table of kind ``otlp`` configures both signals: the pipeline
builder passes its config to :func:`~stagecache.exporters.setup_tracing` for spans
(``traces = true``), and builds this exporter for metrics (``metrics = true``).
Metrics are read every ``export_interval_s`` by a background thread; a collector
that is down costs that thread a failed export (counted in
``stagecache_telemetry_failed_total{stagecache_signal="metrics"}``), never a request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from stagecache.exporters._health import HEALTH
from stagecache.exporters._metrics import EntryCounts, MetricsRecorder
from stagecache.exporters._otlpconfig import (
    OtlpConfig,
    resolve_endpoint,
    resolve_protocol,
    resolve_timeout,
    service_name,
)
from stagecache.exporters._prometheus import entry_counts_of
from stagecache.pipeline._events import Event

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

    from stagecache.pipeline._registry import BuildContext

__all__ = ["OtlpExporter", "make_metric_exporter"]


def make_metric_exporter(config: OtlpConfig) -> MetricExporter:
    """The OTLP metric exporter (gRPC or HTTP) that ``config`` and ``OTEL_*`` name."""
    endpoint = resolve_endpoint(config, "metrics")
    timeout = resolve_timeout(config, "metrics")
    headers = dict(config.headers) or None
    if resolve_protocol(config, "metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=endpoint,
            insecure=config.insecure,
            headers=headers,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout)


class _CountingMetricExporter(MetricExporter):
    """Counts failed metric exports in :data:`HEALTH` (signal ``metrics``)."""

    def __init__(self, inner: MetricExporter) -> None:
        # Temporality and aggregation preferences are the inner exporter's.
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        points = sum(
            len(m.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as exc:  # never kill the reader thread
            HEALTH.record_failed("metrics", points, type(exc).__name__)
            return MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            HEALTH.record_exported("metrics", points)
        else:
            HEALTH.record_failed("metrics", points, "collector unreachable")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


class OtlpExporter:
    """Exports pipeline metrics over OTLP (gRPC or HTTP).

    The meter provider and its export thread start in ``warm_up()``; events that
    arrive before it are ignored. ``aclose()`` flushes the last numbers.

    Args:
        config: endpoint, protocol, interval, prices (unset: ``OTEL_*`` variables).
        exporter: a metric exporter to use instead of OTLP (tests, other backends).
        entry_counts: live entries by scope mode, from the cache engine (optional).
    """

    Config = OtlpConfig

    def __init__(
        self,
        config: OtlpConfig | None = None,
        *,
        exporter: MetricExporter | None = None,
        entry_counts: EntryCounts | None = None,
    ) -> None:
        self.config = config or OtlpConfig()
        self._exporter = exporter
        self._entry_counts = entry_counts
        self._provider: MeterProvider | None = None
        self.recorder: MetricsRecorder | None = None

    @classmethod
    def from_config(cls, config: OtlpConfig, ctx: BuildContext) -> OtlpExporter:
        """Build from config; live entry counts come from ``ctx.cache``, if any."""
        return cls(config, entry_counts=entry_counts_of(ctx.cache))

    def __call__(self, event: Event) -> None:
        """Record ``event``; never blocks, never raises."""
        recorder = self.recorder
        if recorder is not None:
            recorder(event)

    async def warm_up(self) -> None:
        """Start the meter provider and its periodic export thread (idempotent)."""
        if self._provider is not None or not self.config.metrics:
            return
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource

        inner = self._exporter or make_metric_exporter(self.config)
        reader = PeriodicExportingMetricReader(
            _CountingMetricExporter(inner),
            export_interval_millis=self.config.export_interval_s * 1000.0,
        )
        resource = Resource.create({"service.name": service_name(self.config)})
        self._provider = MeterProvider(metric_readers=[reader], resource=resource)
        self.recorder = MetricsRecorder(
            self._provider, prices=self.config.prices, entry_counts=self._entry_counts
        )

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export now (blocking; call it off the event loop). True on success."""
        if self._provider is None:
            return True
        return self._provider.force_flush(int(timeout_s * 1000))

    async def aclose(self) -> None:
        """Flush and stop the export thread (in a worker thread: it may wait)."""
        import anyio

        provider, self._provider = self._provider, None
        self.recorder = None
        if provider is not None:
            await anyio.to_thread.run_sync(provider.shutdown)
