"""Subscribers to pipeline events: OpenTelemetry traces and metrics, logs.

Built-in exporter kinds (``[[exporters]] kind = ...`` in a pipeline config):

- ``otlp`` (:class:`OtlpExporter`): metrics over OTLP; the same config sets up
  traces through :func:`setup_tracing`;
- ``prometheus`` (:class:`PrometheusExporter`): a ``/metrics`` scrape endpoint;
- ``log`` (:class:`LogExporter`): every event as a structlog record.

Third-party exporters register in the ``stagecache.exporters`` entry-point group.
An exporter is a callable ``(event) -> None`` that must not block and must not
raise, with optional ``async warm_up()`` / ``async aclose()``. Every metric, label
and span attribute is listed in ``docs/observability.md``.
"""

from __future__ import annotations

from stagecache.exporters._errors import safe_error_message
from stagecache.exporters._health import HEALTH, ExportHealth
from stagecache.exporters._logging import LogConfig, LogExporter, configure_logging
from stagecache.exporters._metrics import MetricsRecorder
from stagecache.exporters._otlp import OtlpExporter, make_metric_exporter
from stagecache.exporters._otlpconfig import OtlpConfig
from stagecache.exporters._pricing import ModelPrice, PriceTable
from stagecache.exporters._privacy import RedactSensitive, query_attributes, text_hash
from stagecache.exporters._prometheus import PrometheusConfig, PrometheusExporter
from stagecache.exporters._traces import (
    BoundedBatchSpanProcessor,
    make_span_exporter,
    setup_tracing,
)

__all__ = [
    "HEALTH",
    "BoundedBatchSpanProcessor",
    "ExportHealth",
    "LogConfig",
    "LogExporter",
    "MetricsRecorder",
    "ModelPrice",
    "OtlpConfig",
    "OtlpExporter",
    "PriceTable",
    "PrometheusConfig",
    "PrometheusExporter",
    "RedactSensitive",
    "configure_logging",
    "make_metric_exporter",
    "make_span_exporter",
    "query_attributes",
    "safe_error_message",
    "setup_tracing",
    "text_hash",
]
