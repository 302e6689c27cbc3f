"""Tracing helpers: the tracer a pipeline uses, and trace ids for logs.

A pipeline takes an optional OpenTelemetry ``TracerProvider``. Without one it uses the
global provider (so an application that configured OpenTelemetry sees our spans in
its traces); with ``tracing=False`` it uses a no-op tracer, which costs a few
hundred nanoseconds per span.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["add_trace_ids", "current_trace_ids", "make_tracer"]

_SCOPE = "stagecache"


def make_tracer(provider: TracerProvider | None, *, enabled: bool = True) -> Tracer:
    """The tracer for a pipeline: from ``provider``, the global one, or a no-op."""
    if not enabled:
        return trace.NoOpTracer()
    if provider is None:
        return trace.get_tracer(_SCOPE)
    return provider.get_tracer(_SCOPE)


def current_trace_ids(span: Span | None = None) -> tuple[str, str]:
    """``(trace_id, span_id)`` as hex of ``span`` (default: the current span).

    Both are ``""`` when there is no recording span.
    """
    ctx = (span or trace.get_current_span()).get_span_context()
    if not ctx.is_valid:
        return "", ""
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def add_trace_ids(
    _logger: Any, _method: str, event_dict: dict[str, Any]
) -> dict[str, Any]:
    """A structlog processor that binds ``trace_id`` and ``span_id`` to every record."""
    trace_id, span_id = current_trace_ids()
    if trace_id:
        event_dict.setdefault("trace_id", trace_id)
        event_dict.setdefault("span_id", span_id)
    return event_dict
