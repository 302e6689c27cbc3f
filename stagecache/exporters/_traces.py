"""The tracer provider: spans exported over OTLP in batches that never block.

:func:`setup_tracing` builds an SDK ``TracerProvider`` whose finished spans go to a
bounded queue, exported by a background thread (OpenTelemetry's
``BatchSpanProcessor``). A request only ever appends to that queue. When the
collector is down, exports fail in the background (counted in
``stagecache_telemetry_failed_total``); when the queue is full, new spans are
dropped (counted in ``stagecache_telemetry_dropped_total``) and a rate-limited log
line says so.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from openinference.semconv.resource import ResourceAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from stagecache.exporters._health import HEALTH, ExportHealth
from stagecache.exporters._openinference import OpenInferenceSpanExporter
from stagecache.exporters._otlpconfig import (
    OtlpConfig,
    resolve_endpoint,
    resolve_protocol,
    resolve_timeout,
    service_name,
)
from stagecache.exporters._spancost import PricedSpanExporter

__all__ = ["BoundedBatchSpanProcessor", "make_span_exporter", "setup_tracing"]

PROJECT_NAME = ResourceAttributes.PROJECT_NAME


def make_span_exporter(config: OtlpConfig) -> SpanExporter:
    """The OTLP span exporter (gRPC or HTTP) that ``config`` and ``OTEL_*`` name."""
    endpoint = resolve_endpoint(config, "traces")
    timeout = resolve_timeout(config, "traces")
    headers = dict(config.headers) or None
    if resolve_protocol(config, "traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=endpoint,
            insecure=config.insecure,
            headers=headers,
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)


class _CountingExporter(SpanExporter):
    """Wraps an exporter: counts what leaves the queue and how each export ends."""

    def __init__(self, inner: SpanExporter, on_taken: _Pending, health: ExportHealth):
        self._inner = inner
        self._pending = on_taken
        self._health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._pending.taken(len(spans))
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # an exporter bug must not kill the export thread
            self._health.record_failed("traces", len(spans), type(exc).__name__)
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._health.record_exported("traces", len(spans))
        else:
            self._health.record_failed("traces", len(spans), "collector unreachable")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _Pending:
    """How many spans sit in the batch queue (handed in, not yet taken out)."""

    __slots__ = ("_lock", "count")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def try_add(self, limit: int) -> bool:
        with self._lock:
            if self.count >= limit:
                return False
            self.count += 1
            return True

    def taken(self, n: int) -> None:
        with self._lock:
            self.count = max(0, self.count - n)


class BoundedBatchSpanProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans it drops.

    The SDK's processor drops the oldest span of a full queue with one log line
    and no count. This one keeps its own count of queued spans and drops the *new*
    span when the queue is full, counting it in :data:`HEALTH` (``dropped``), so
    the loss shows in metrics. Export results are counted as well.

    Args:
        exporter: where batches go.
        max_queue_size: spans held at most.
        max_export_batch_size: spans per export.
        schedule_delay_s: the longest a span waits before its batch is exported.
        health: the counters to update (default: the process-wide one).
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_s: float = 1.0,
        health: ExportHealth = HEALTH,
    ) -> None:
        self._pending = _Pending()
        self._limit = max_queue_size
        self._health = health
        self._batch = BatchSpanProcessor(
            _CountingExporter(exporter, self._pending, health),
            # One spare slot: the SDK queue never reaches its own drop path.
            max_queue_size=max_queue_size + 1,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_s * 1000.0,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._batch.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if not self._pending.try_add(self._limit):
            self._health.record_dropped("traces")
            return
        self._batch.on_end(span)

    def shutdown(self) -> None:
        # The SDK leaves this method unannotated.
        self._batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


def setup_tracing(
    config: OtlpConfig | None = None, *, exporter: SpanExporter | None = None
) -> TracerProvider:
    """A tracer provider exporting spans over OTLP, for ``Pipeline(tracer_provider=)``.

    Args:
        config: endpoint, protocol, queue size, ...; unset fields come from the
            ``OTEL_*`` variables (default: everything from the environment).
        exporter: a span exporter to use instead of OTLP (tests, other backends);
            it still sits behind the bounded, drop-counting batch processor.
            With ``config.prices``, ``chat`` spans gain ``stagecache.cost_usd``
            and ``cache.hit`` spans ``stagecache.saved.cost_usd``; with
            ``config.openinference`` (the default), spans gain their
            OpenInference kind and metadata (Arize Phoenix).

    Returns:
        An SDK ``TracerProvider`` with resource ``service.name`` (and, with
        ``config.openinference``, ``openinference.project.name``). Call its
        ``shutdown()`` at exit to flush the last spans.

    Raises:
        ValueError: an ``OTEL_*`` variable names an unsupported protocol.
    """
    config = config or OtlpConfig()
    name = service_name(config)
    attributes = {"service.name": name}
    span_exporter = exporter or make_span_exporter(config)
    if config.openinference:  # Phoenix files the spans under a project of this name
        attributes[PROJECT_NAME] = name
        span_exporter = OpenInferenceSpanExporter(span_exporter)
    provider = TracerProvider(resource=Resource.create(attributes))
    if config.prices:  # model calls and hits gain their cost in USD
        span_exporter = PricedSpanExporter(span_exporter, config.prices)
    provider.add_span_processor(
        BoundedBatchSpanProcessor(
            span_exporter,
            max_queue_size=config.max_queue_size,
            max_export_batch_size=config.max_export_batch_size,
            schedule_delay_s=config.schedule_delay_s,
        )
    )
    return provider
