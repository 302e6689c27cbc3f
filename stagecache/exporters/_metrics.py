"""Pipeline events turned into OpenTelemetry metrics.

:class:`MetricsRecorder` is an event-bus subscriber that records each event on
instruments of an OpenTelemetry ``MeterProvider``; the OTLP and Prometheus
exporters differ only in the metric reader of that provider. Recording is a dict
lookup and an in-memory add: it never blocks and (as the bus requires) never
raises. Every metric and label is listed in ``docs/observability.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from stagecache.exporters import _genai
from stagecache.exporters._health import HEALTH, ExportHealth
from stagecache.exporters._labels import LabelLimiter
from stagecache.exporters._pricing import (
    BoundedMap,
    ModelPrice,
    PriceTable,
    TokenCount,
    estimate_tokens,
)
from stagecache.pipeline import _events as ev

__all__ = ["MetricsRecorder"]

_log = logging.getLogger("stagecache.exporters")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Cosine distance (1 - similarity): fine near 0, where thresholds live
#: (distance 0.08 is similarity 0.92), and up to 2 (similarity -1).
DISTANCE_BUCKETS = (
    0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1,
    0.12, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0,
)  # fmt: skip
AGE_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)

# Attribute keys: OpenTelemetry semantic conventions where one exists, else ours.
MODEL = "gen_ai.request.model"
TOKEN_TYPE = "gen_ai.token.type"
ERROR_TYPE = "error.type"
OUTCOME = "stagecache.outcome"
STAGE = "stagecache.stage"
SCOPE_MODE = "cache.scope_mode"
REASON = "cache.reason"

EntryCounts = Callable[[], Mapping[str, int]]


def cosine_distance(similarity: float) -> float:
    """The cosine distance ``1 - similarity`` the histogram records, in [0, 2].

    An OpenTelemetry histogram takes no negative value (the SDK drops it with a
    warning), and a cosine similarity can be negative. Its distance cannot: every
    similarity in [-1, 1] is recorded as it is, the histogram's sum is exact, and
    a quantile of the distance gives the mirrored one of the similarity
    (``1 - p50(distance)`` is the median similarity). A similarity a hair above 1
    (float rounding of a dot product) records 0.
    """
    return max(0.0, 1.0 - similarity)


class MetricsRecorder:
    """Records pipeline events on OpenTelemetry instruments.

    Args:
        meter_provider: where the instruments live (its readers decide where the
            numbers go).
        prices: USD per 1k tokens by model id, for the cost saved by hits.
        entry_counts: optional function returning live entries by scope mode
            (from the cache engine); without it the recorder keeps its own count
            from store, eviction and invalidation events.
        health: telemetry health counters to publish (dropped/failed spans).
        max_label_values: distinct values kept per label that comes from outside
            (model id, stage, rule, error type, reason); later ones are ``other``.
    """

    #: Default of ``max_label_values``.
    MAX_LABEL_VALUES = 100

    def __init__(
        self,
        meter_provider: MeterProvider,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        entry_counts: EntryCounts | None = None,
        health: ExportHealth = HEALTH,
        max_label_values: int = MAX_LABEL_VALUES,
    ) -> None:
        self._prices = PriceTable(prices)
        self._label = LabelLimiter(
            max_label_values, known=(m for m in (prices or {}) if m != "*")
        )
        self._entry_counts = entry_counts
        self._health = health
        # Per-scope entry counts, kept when the cache engine offers none.
        self._scopes: BoundedMap[str, tuple[str, int]] = BoundedMap(100_000)
        # request_id -> usage of its model call; entry_id -> usage of its answer.
        self._call_usage: BoundedMap[str, tuple[str, TokenCount]] = BoundedMap()
        self._entry_usage: BoundedMap[str, TokenCount] = BoundedMap()
        m = meter_provider.get_meter(_genai.SCOPE, _genai.scope_version())
        self.requests = m.create_counter(
            "stagecache.requests", "{request}", "Requests by outcome"
        )
        self.request_duration = m.create_histogram(
            "stagecache.request.duration", "s", "Request latency",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )  # fmt: skip
        self.stage_duration = m.create_histogram(
            "stagecache.stage.duration", "s", "Stage latency",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )  # fmt: skip
        self.stage_failures = m.create_counter(
            "stagecache.stage.failures", "{failure}", "Contained stage failures"
        )
        self.lookups = m.create_counter(
            "stagecache.cache.lookups", "{lookup}", "Cache lookups by result"
        )
        self.distance = m.create_histogram(
            "stagecache.cache.distance", "{cosine_distance}",
            "Best-candidate cosine distance (1 - similarity, in [0, 2])",
            explicit_bucket_boundaries_advisory=DISTANCE_BUCKETS,
        )  # fmt: skip
        self.threshold = m.create_gauge(
            "stagecache.cache.threshold", "{cosine}", "Similarity threshold in force"
        )
        self.entry_age = m.create_histogram(
            "stagecache.cache.entry_age", "s", "Age of the entries that answered",
            explicit_bucket_boundaries_advisory=AGE_BUCKETS,
        )  # fmt: skip
        self.stores = m.create_counter("stagecache.cache.stores", "{entry}", "Stores")
        self.evictions = m.create_counter(
            "stagecache.cache.evictions", "{entry}", "Entries evicted by reason"
        )
        self.cache_errors = m.create_counter(
            "stagecache.cache.errors", "{error}", "Contained cache failures"
        )
        m.create_observable_gauge(
            "stagecache.cache.entries", [self._observe_entries], "{entry}",
            "Live cache entries by scope mode",
        )  # fmt: skip
        m.create_observable_gauge(
            "stagecache.cache.scopes", [self._observe_scopes], "{scope}",
            "Scopes holding entries, by scope mode",
        )  # fmt: skip
        self.guard_blocked = m.create_counter(
            "stagecache.guard.blocked", "{request}", "Requests blocked by guards"
        )
        self.guard_redacted = m.create_counter(
            "stagecache.guard.redactions", "{redaction}", "Guard redactions"
        )
        self.embedding_lookups = m.create_counter(
            "stagecache.embedding.cache.lookups", "{lookup}", "Embedding-cache lookups"
        )
        self.llm_calls = m.create_counter("stagecache.llm.calls", "{call}", "LLM calls")
        self.llm_duration = m.create_histogram(
            "stagecache.llm.duration", "s", "LLM call latency",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )  # fmt: skip
        self.llm_tokens = m.create_counter(
            "stagecache.llm.tokens", "{token}", "Tokens used by LLM calls"
        )
        self.llm_cost = m.create_counter(
            "stagecache.llm.cost_usd", "{USD}", "Estimated LLM spend (USD)"
        )
        self.calls_saved = m.create_counter(
            "stagecache.llm.calls_saved", "{call}", "LLM calls answered by the cache"
        )
        self.tokens_saved = m.create_counter(
            "stagecache.llm.tokens_saved", "{token}", "Tokens the cache saved"
        )
        self.cost_saved = m.create_counter(
            "stagecache.llm.cost_saved_usd", "{USD}", "Estimated LLM cost saved (USD)"
        )
        # OpenTelemetry's GenAI client metrics, beside the stagecache.* ones.
        self.genai_tokens = m.create_histogram(
            _genai.TOKEN_USAGE, "{token}", "Tokens used by model calls",
            explicit_bucket_boundaries_advisory=_genai.TOKEN_BUCKETS,
        )  # fmt: skip
        self.genai_duration = m.create_histogram(
            _genai.OPERATION_DURATION, "s", "Model call duration",
            explicit_bucket_boundaries_advisory=_genai.DURATION_BUCKETS,
        )  # fmt: skip
        self.feedback = m.create_counter(
            "stagecache.cache.feedback", "{report}", "Answer-correctness feedback"
        )
        m.create_observable_counter(
            "stagecache.telemetry.dropped", [self._observe_dropped], "{item}",
            "Telemetry items dropped by a full export queue",
        )  # fmt: skip
        m.create_observable_counter(
            "stagecache.telemetry.failed", [self._observe_failed], "{item}",
            "Telemetry items whose export failed",
        )  # fmt: skip
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.RequestFinished: self._on_request,
            ev.StageFinished: self._on_stage,
            ev.StageFailed: self._on_stage_failed,
            ev.CacheHit: self._on_hit,
            ev.CacheMiss: self._on_miss,
            ev.CacheStore: self._on_store,
            ev.CacheSkip: self._on_skip,
            ev.CacheError: self._on_cache_error,
            ev.CacheEvicted: self._on_evicted,
            ev.Invalidated: self._on_invalidated,
            ev.GuardBlocked: self._on_blocked,
            ev.GuardRedacted: self._on_redacted,
            ev.LLMCall: self._on_llm,
            ev.EmbeddingCacheStats: self._on_embedding,
            ev.Feedback: self._on_feedback,
        }

    def __call__(self, event: ev.Event) -> None:
        """Record ``event`` (a bus subscriber: never blocks, never raises)."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return
        try:
            handler(event)
        except Exception:  # a metrics bug must not reach the bus, let alone a request
            _log.exception("metrics recorder failed on %s", type(event).__name__)

    # -- requests and stages ------------------------------------------------------

    def _on_request(self, e: ev.RequestFinished) -> None:
        attrs = {
            OUTCOME: e.outcome,
            SCOPE_MODE: e.scope_mode or "none",
            MODEL: self._label(MODEL, e.model),
        }
        self.requests.add(1, attrs)
        self.request_duration.record(e.latency_s, {OUTCOME: e.outcome})

    def _on_stage(self, e: ev.StageFinished) -> None:
        self.stage_duration.record(
            e.duration_s,
            {STAGE: self._label(STAGE, e.stage), "stagecache.status": "ok"},
        )

    def _on_stage_failed(self, e: ev.StageFailed) -> None:
        stage = self._label(STAGE, e.stage)
        self.stage_duration.record(
            e.duration_s, {STAGE: stage, "stagecache.status": "error"}
        )
        self.stage_failures.add(
            1,
            {
                STAGE: stage,
                ERROR_TYPE: self._label(ERROR_TYPE, e.error_type),
                "stagecache.policy": self._label("stagecache.policy", e.policy),
            },
        )

    # -- cache ------------------------------------------------------------------

    def _on_hit(self, e: ev.CacheHit) -> None:
        mode = e.scope_mode or "none"
        self.lookups.add(1, {"cache.result": "hit", SCOPE_MODE: mode, REASON: "hit"})
        self.distance.record(
            cosine_distance(e.similarity), {"cache.result": "hit", SCOPE_MODE: mode}
        )
        self.threshold.set(e.threshold, {SCOPE_MODE: mode})
        self.entry_age.record(max(e.entry_age_s, 0.0), {SCOPE_MODE: mode})
        model = self._label(MODEL, e.model or "unknown")
        self.calls_saved.add(1, {MODEL: model})
        tokens = self._hit_tokens(e)
        if tokens is not None:
            self.tokens_saved.add(tokens.prompt, {MODEL: model, TOKEN_TYPE: "input"})
            self.tokens_saved.add(
                tokens.completion, {MODEL: model, TOKEN_TYPE: "output"}
            )
            self.cost_saved.add(self._prices.cost(model, tokens), {MODEL: model})

    def _hit_tokens(self, e: ev.CacheHit) -> TokenCount | None:
        # Stored usage carried on the event (newer event schema) wins.
        prompt = getattr(e, "prompt_tokens", None)
        completion = getattr(e, "completion_tokens", None)
        if isinstance(prompt, int) and isinstance(completion, int):
            return TokenCount(prompt, completion)
        known = self._entry_usage.get(e.entry_id)
        if known is not None:
            return known
        chars = getattr(e, "answer_chars", None)
        query_chars = getattr(e, "query_chars", 0)
        if isinstance(chars, int) and isinstance(query_chars, int):
            return TokenCount(estimate_tokens(query_chars), estimate_tokens(chars))
        return None

    def _on_miss(self, e: ev.CacheMiss) -> None:
        mode = e.scope_mode or "none"
        reason = self._label(REASON, e.reason)
        self.lookups.add(1, {"cache.result": "miss", SCOPE_MODE: mode, REASON: reason})
        self.threshold.set(e.threshold, {SCOPE_MODE: mode})
        if e.similarity is not None:
            self.distance.record(
                cosine_distance(e.similarity),
                {"cache.result": "miss", SCOPE_MODE: mode},
            )

    def _on_skip(self, e: ev.CacheSkip) -> None:
        self.lookups.add(
            1,
            {
                "cache.result": "skip",
                SCOPE_MODE: e.scope_mode or "none",
                REASON: self._label(REASON, e.reason),
            },
        )

    def _on_cache_error(self, e: ev.CacheError) -> None:
        mode = e.scope_mode or "none"
        error_type = self._label(ERROR_TYPE, e.error_type)
        self.cache_errors.add(
            1,
            {
                "cache.operation": self._label("cache.operation", e.operation),
                ERROR_TYPE: error_type,
                SCOPE_MODE: mode,
            },
        )
        if e.operation == "lookup":  # not a store, nor a hit's failed side write
            self.lookups.add(
                1, {"cache.result": "error", SCOPE_MODE: mode, REASON: error_type}
            )

    def _on_store(self, e: ev.CacheStore) -> None:
        self.stores.add(1, {SCOPE_MODE: e.scope_mode or "none"})
        mode, count = self._scopes.get(e.scope) or (e.scope_mode or "none", 0)
        self._scopes.put(e.scope, (mode, count + 1))
        call = self._call_usage.pop(e.request_id)
        if call is not None:
            self._entry_usage.put(e.entry_id, call[1])
        elif e.answer_chars:
            self._entry_usage.put(
                e.entry_id, TokenCount(0, estimate_tokens(e.answer_chars))
            )

    def _forget(self, scope: str, count: int) -> None:
        known = self._scopes.get(scope)
        if known is None:
            return
        mode, have = known
        if count >= have:
            self._scopes.pop(scope)
        else:
            self._scopes.put(scope, (mode, have - count))

    def _on_evicted(self, e: ev.CacheEvicted) -> None:
        self.evictions.add(e.count, {REASON: self._label(REASON, e.reason)})
        if e.scope:
            self._forget(e.scope, e.count)

    def _on_invalidated(self, e: ev.Invalidated) -> None:
        self.evictions.add(e.count, {REASON: self._label(REASON, e.reason)})
        self._forget(e.scope, e.count)

    def _counts(self) -> dict[str, tuple[int, int]]:
        """scope mode -> (entries, scopes)."""
        result: dict[str, tuple[int, int]] = {}
        for mode, count in self._scopes.values():
            entries, scopes = result.get(mode, (0, 0))
            result[mode] = (entries + count, scopes + 1)
        return result

    def _observe_entries(self, _options: CallbackOptions) -> Iterable[Observation]:
        if self._entry_counts is not None:
            counts = dict(self._entry_counts())
        else:
            counts = {mode: n for mode, (n, _) in self._counts().items()}
        for mode in ("per_user", "per_session", "shared"):
            counts.setdefault(mode, 0)
        return [
            Observation(n, {SCOPE_MODE: mode}) for mode, n in sorted(counts.items())
        ]

    def _observe_scopes(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(scopes, {SCOPE_MODE: mode})
            for mode, (_, scopes) in sorted(self._counts().items())
        ]

    # -- guards, model, embeddings, feedback --------------------------------------

    def _on_blocked(self, e: ev.GuardBlocked) -> None:
        self.guard_blocked.add(1, self._rule_labels(e.stage, e.rule))

    def _on_redacted(self, e: ev.GuardRedacted) -> None:
        self.guard_redacted.add(e.count, self._rule_labels(e.stage, e.rule))

    def _rule_labels(self, stage: str, rule: str) -> dict[str, str]:
        return {
            STAGE: self._label(STAGE, stage),
            "stagecache.rule": self._label("stagecache.rule", rule),
        }

    def _on_llm(self, e: ev.LLMCall) -> None:
        model = self._label(MODEL, e.model or "unknown")
        self.llm_calls.add(1, {MODEL: model, "stagecache.ok": str(e.ok).lower()})
        self.llm_duration.record(e.latency_s, {MODEL: model})
        self.llm_tokens.add(e.prompt_tokens, {MODEL: model, TOKEN_TYPE: "input"})
        self.llm_tokens.add(e.completion_tokens, {MODEL: model, TOKEN_TYPE: "output"})
        tokens = TokenCount(e.prompt_tokens, e.completion_tokens)
        self.llm_cost.add(self._prices.cost(model, tokens), {MODEL: model})
        if e.ok and e.request_id:
            self._call_usage.put(e.request_id, (model, tokens))
        self._on_genai(e, model)

    def _on_genai(self, e: ev.LLMCall, model: str) -> None:
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self._label(
                "gen_ai.provider.name", getattr(e, "provider", "") or "unknown"
            ),
            MODEL: model,
        }
        response_model = getattr(e, "response_model", "")
        if response_model:
            attrs["gen_ai.response.model"] = self._label(
                "gen_ai.response.model", response_model
            )
        error = getattr(e, "error_type", "") or ("" if e.ok else "error")
        if error:
            attrs[ERROR_TYPE] = self._label(ERROR_TYPE, error)
        self.genai_duration.record(e.latency_s, attrs)
        if e.ok:
            self.genai_tokens.record(e.prompt_tokens, {**attrs, TOKEN_TYPE: "input"})
            self.genai_tokens.record(
                e.completion_tokens, {**attrs, TOKEN_TYPE: "output"}
            )

    def _on_embedding(self, e: ev.EmbeddingCacheStats) -> None:
        self.embedding_lookups.add(e.hits, {"cache.result": "hit"})
        self.embedding_lookups.add(e.misses, {"cache.result": "miss"})

    def _on_feedback(self, e: ev.Feedback) -> None:
        self.feedback.add(1, {"stagecache.correct": str(e.correct).lower()})

    # -- telemetry health ---------------------------------------------------------

    def _observe_dropped(self, _options: CallbackOptions) -> Iterable[Observation]:
        dropped = self._health.snapshot()["dropped"]
        dropped.setdefault("traces", 0)
        return [Observation(n, {"stagecache.signal": s}) for s, n in dropped.items()]

    def _observe_failed(self, _options: CallbackOptions) -> Iterable[Observation]:
        failed = self._health.snapshot()["failed"]
        failed.setdefault("traces", 0)
        return [Observation(n, {"stagecache.signal": s}) for s, n in failed.items()]
