"""A tracer whose spans record escaping exceptions without their messages.

OpenTelemetry's ``start_as_current_span`` records an exception that leaves the
``with`` block with ``span.record_exception`` (message and full traceback) and
sets the status description to ``"Type: message"``. A stage of a plugin, or an
error that ends the request, would put a foreign message (an upstream 400 quoting
the prompt) into the trace that way. :class:`PrivateTracer` wraps the pipeline's
tracer: its spans record such exceptions through
:func:`~stagecache.exporters._errors.record_error` and describe the status with
the exception's type only.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)
from opentelemetry.util.types import Attributes

from stagecache.exporters._errors import record_error

__all__ = ["PrivateTracer"]


class _SpanScope:
    """The context manager of one span: OpenTelemetry's, minus the messages."""

    __slots__ = ("_inner", "_record", "_set_status", "_span")

    def __init__(self, inner: Any, record: bool, set_status: bool) -> None:
        self._inner = inner
        self._record = record
        self._set_status = set_status
        self._span: Span | None = None

    def __enter__(self) -> Span:
        span: Span = self._inner.__enter__()
        self._span = span
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        span = self._span
        if exc is not None and span is not None and span.is_recording():
            # One ``exception`` event and one status per failure: an error the
            # code inside already recorded (then re-raised or wrapped) is not
            # recorded twice.
            if self._record and not _has_exception(span):
                record_error(span, exc, escaped=True)
            if self._set_status and not _has_error_status(span):
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        return self._inner.__exit__(exc_type, exc, tb)  # type: ignore[no-any-return]


def _has_exception(span: Span) -> bool:
    """Whether ``span`` (an SDK span) already carries an ``exception`` event."""
    events = getattr(span, "events", None) or ()
    return any(getattr(e, "name", None) == "exception" for e in events)


def _has_error_status(span: Span) -> bool:
    status = getattr(span, "status", None)
    return getattr(status, "status_code", None) is StatusCode.ERROR


class PrivateTracer(Tracer):
    """Wraps a tracer so that no span copies an exception's message.

    Args:
        inner: the tracer that makes the spans.
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: Tracer) -> None:
        self._inner = inner

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """Start a span; used as a context manager it records no exception."""
        return self._inner.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
        )

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _SpanScope:
        """Start a current span; an escaping exception is recorded privately."""
        inner = self._inner.start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
            end_on_exit=end_on_exit,
        )
        return _SpanScope(inner, record_exception, set_status_on_exception)
