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


class _NullSpanContext:
    """``with tracer.start_as_current_span(...)`` that does nothing at all."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return trace.INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_SPAN = _NullSpanContext()


class NullTracer(trace.NoOpTracer):
    """A no-op tracer whose spans cost one attribute lookup.

    OpenTelemetry's ``NoOpTracer`` still attaches and detaches a context per span
    (about 5 us); with tracing off a request makes ~18 spans, so that alone would
    be a third of the pipeline's own overhead.
    """

    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> _NullSpanContext:
        return _NULL_SPAN


def make_tracer(provider: TracerProvider | None, *, enabled: bool = True) -> Tracer:
    """The tracer for a pipeline: from ``provider``, the global one, or a no-op.

    Its spans never copy an exception's message (see
    :mod:`stagecache.exporters._safespans`).
    """
    if not enabled:
        return NullTracer()
    # Imported here: the exporters package imports this module.
    from stagecache.exporters._genai import scope_version
    from stagecache.exporters._safespans import PrivateTracer

    if provider is None:
        return PrivateTracer(trace.get_tracer(_SCOPE, scope_version()))
    return PrivateTracer(provider.get_tracer(_SCOPE, scope_version()))


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
