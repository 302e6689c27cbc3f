"""OpenInference span kinds and metadata, for Arize Phoenix and other LLM viewers.

LLM-trace viewers built on OpenInference (Arize Phoenix, Arize AX) sort spans by
``openinference.span.kind`` and show a span's ``metadata`` (a JSON object) beside
its name; a span without a kind is ``unknown``. Phoenix derives the kind of the
model call from its ``gen_ai.*`` attributes, but nothing tells it what the
request, the stages and the ``cache.*`` spans are, so a cache hit looks like any
unknown span. :class:`OpenInferenceSpanExporter` adds, at export time and on a
copy of the span (the SDK's spans are finished and read-only):

- ``openinference.span.kind``: ``LLM`` for a GenAI ``chat`` / ``text_completion``
  / ``generate_content`` span and ``EMBEDDING`` for ``embeddings``; ``CHAIN`` for
  ``stagecache.request`` and the ``stagecache.stage.*`` spans, ``GUARDRAIL`` for a
  stage whose name ends in ``guard``; ``RETRIEVER`` for the cache lookups
  (``cache.hit``, ``cache.miss``, ``cache.bypass``: a nearest-neighbour search
  over stored answers) and ``CHAIN`` for the other ``cache.*`` spans;
- ``metadata``: on ``stagecache.request`` and ``cache.*`` spans, a JSON object of
  their ``cache.*``, ``stagecache.outcome`` and ``stagecache.saved.*`` attributes,
  e.g. ``{"cache.status": "hit", ...}`` on the request of a hit, so the viewer's
  span list says which requests the cache answered and what they saved.

A span that already has a kind or metadata keeps it; spans of other
instrumentations pass through untouched. The attribute names and kind values are
the constants of the ``openinference-semantic-conventions`` package.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues as Kind
from openinference.semconv.trace import SpanAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

__all__ = ["METADATA", "SPAN_KIND", "OpenInferenceSpanExporter", "openinference_kind"]

SPAN_KIND = SpanAttributes.OPENINFERENCE_SPAN_KIND
METADATA = SpanAttributes.METADATA

_GENAI_KINDS = {
    "chat": Kind.LLM.value,
    "text_completion": Kind.LLM.value,
    "generate_content": Kind.LLM.value,
    "embeddings": Kind.EMBEDDING.value,
}
_LOOKUPS = frozenset({"cache.hit", "cache.miss", "cache.bypass"})
_METADATA_PREFIXES = ("cache.", "stagecache.saved.")
_METADATA_KEYS = frozenset({"stagecache.outcome"})
_NOT_METADATA = frozenset({"cache.query"})  # opt-in raw text stays an attribute


def with_attributes(span: ReadableSpan, extra: Mapping[str, Any]) -> ReadableSpan:
    """A copy of a finished span with ``extra`` attributes added."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**(span.attributes or {}), **extra},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def openinference_kind(name: str, attributes: Mapping[str, Any]) -> str | None:
    """The OpenInference span kind of a stagecache span (None: not one of ours)."""
    operation = attributes.get(ga.GEN_AI_OPERATION_NAME)
    if isinstance(operation, str):
        return _GENAI_KINDS.get(operation)
    if name == "stagecache.request":
        return Kind.CHAIN.value
    if name.startswith("stagecache.stage."):
        stage = str(attributes.get("stagecache.stage") or name)
        return Kind.GUARDRAIL.value if stage.endswith("guard") else Kind.CHAIN.value
    if name in _LOOKUPS:
        return Kind.RETRIEVER.value
    if name.startswith("cache."):
        return Kind.CHAIN.value
    return None


def _metadata(name: str, attributes: Mapping[str, Any]) -> str | None:
    if name != "stagecache.request" and not name.startswith("cache."):
        return None
    picked = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in sorted(attributes.items())
        if (key.startswith(_METADATA_PREFIXES) or key in _METADATA_KEYS)
        and key not in _NOT_METADATA
    }
    return json.dumps(picked, separators=(",", ":")) if picked else None


class OpenInferenceSpanExporter(SpanExporter):
    """Wraps a span exporter: stagecache spans gain OpenInference kind and metadata.

    Args:
        inner: where the spans go.
    """

    def __init__(self, inner: SpanExporter):
        self._inner = inner

    @staticmethod
    def annotate(span: ReadableSpan) -> ReadableSpan:
        """``span`` with ``openinference.span.kind`` and ``metadata`` where due."""
        attrs = span.attributes or {}
        extra: dict[str, Any] = {}
        if SPAN_KIND not in attrs:
            kind = openinference_kind(span.name, attrs)
            if kind is not None:
                extra[SPAN_KIND] = kind
        if METADATA not in attrs:
            metadata = _metadata(span.name, attrs)
            if metadata is not None:
                extra[METADATA] = metadata
        return with_attributes(span, extra) if extra else span

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([self.annotate(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
