"""Cost on spans: what a model call spent and what a cache hit saved, in USD.

Spans are finished before export, and only the exporter configuration knows the
prices (``prices`` of ``[[exporters]] kind = "otlp"``). So :class:`PricedSpanExporter`
adds the cost while a batch is exported, on a copy of each span it prices:

- ``chat {model}`` (a model call with ``gen_ai.usage.*``): ``stagecache.cost_usd``;
- ``cache.hit`` (with ``stagecache.saved.*_tokens``): ``stagecache.saved.cost_usd``.

A model without a price gets no cost attribute (the tokens are there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from stagecache.exporters._pricing import ModelPrice, PriceTable, TokenCount

__all__ = ["COST", "SAVED_COST", "PricedSpanExporter"]

#: Estimated spend of a model call (USD), on its ``chat`` span.
COST = "stagecache.cost_usd"
#: Estimated spend a cache hit saved (USD), on its ``cache.hit`` span.
SAVED_COST = "stagecache.saved.cost_usd"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class PricedSpanExporter(SpanExporter):
    """Wraps a span exporter: model-call and cache-hit spans gain their cost.

    Args:
        inner: where the spans go.
        prices: USD per 1k tokens by model id (``"*"``: any other model).
    """

    def __init__(self, inner: SpanExporter, prices: Mapping[str, ModelPrice]):
        self._inner = inner
        self._prices = PriceTable(prices)

    def _cost(self, model: Any, prompt: Any, output: Any) -> float | None:
        prompt, output = _int(prompt), _int(output)
        if not isinstance(model, str) or prompt is None or output is None:
            return None
        if self._prices.price(model) is None:
            return None
        return self._prices.cost(model, TokenCount(prompt, output))

    def _priced(self, span: ReadableSpan) -> ReadableSpan:
        attrs = span.attributes or {}
        if ga.GEN_AI_USAGE_INPUT_TOKENS in attrs:
            key = COST
            cost = self._cost(
                attrs.get(ga.GEN_AI_REQUEST_MODEL),
                attrs.get(ga.GEN_AI_USAGE_INPUT_TOKENS),
                attrs.get(ga.GEN_AI_USAGE_OUTPUT_TOKENS),
            )
        elif span.name == "cache.hit":
            key = SAVED_COST
            cost = self._cost(
                attrs.get("stagecache.model"),
                attrs.get("stagecache.saved.input_tokens"),
                attrs.get("stagecache.saved.output_tokens"),
            )
        else:
            return span
        if cost is None:
            return span
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes={**attrs, key: cost},
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([self._priced(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
