"""Typed pipeline events and the in-process event bus.

The runner and the stages publish events; exporters (metrics, logs, third-party
sinks) subscribe. Publishing is a synchronous loop over the subscribers, as
OpenTelemetry's span processors are: each subscriber must not block and must not
raise. The bus contains an exception from a subscriber (it is counted in
``EventBus.failures`` and logged once per subscriber), so a broken exporter never
fails or slows a request by more than its own call. Subscribers that do I/O keep
their own bounded queue (as the OTLP batch processors do).

Scopes appear in events only as a hash (``scope``), never as the raw user id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "CacheError",
    "CacheEvicted",
    "CacheHit",
    "CacheMiss",
    "CacheSkip",
    "CacheStore",
    "EmbeddingCacheStats",
    "Event",
    "EventBus",
    "Feedback",
    "GuardBlocked",
    "GuardRedacted",
    "Invalidated",
    "LLMCall",
    "RequestFinished",
    "RequestStarted",
    "StageFailed",
    "StageFinished",
    "StageStarted",
]

_log = logging.getLogger("stagecache.events")


class Event(msgspec.Struct, frozen=True, tag_field="event", kw_only=True):
    """Base of every event. ``event`` (the tag) names the kind."""

    request_id: str = ""
    ts: float = msgspec.field(default_factory=time.time)


class RequestStarted(Event, frozen=True, tag="request.started"):
    model: str = ""


class RequestFinished(Event, frozen=True, tag="request.finished"):
    """Outcome is ``hit``, ``miss``, ``skip``, ``blocked``, ``error`` or ``off``."""

    outcome: str
    latency_s: float
    model: str = ""
    scope_mode: str = ""


class StageStarted(Event, frozen=True, tag="stage.started"):
    stage: str


class StageFinished(Event, frozen=True, tag="stage.finished"):
    stage: str
    duration_s: float


class StageFailed(Event, frozen=True, tag="stage.failed"):
    stage: str
    error_type: str
    policy: str
    duration_s: float
    message: str = ""


class CacheHit(Event, frozen=True, tag="cache.hit"):
    scope: str
    scope_mode: str
    similarity: float
    threshold: float
    entry_id: str
    entry_age_s: float
    model: str = ""
    query_chars: int = 0
    answer_chars: int = 0
    prompt_tokens: int | None = None  # usage of the model call that made the entry
    completion_tokens: int | None = None


class CacheMiss(Event, frozen=True, tag="cache.miss"):
    scope: str
    scope_mode: str
    threshold: float
    similarity: float | None = None
    reason: str = "no_candidate"
    model: str = ""


class CacheStore(Event, frozen=True, tag="cache.store"):
    scope: str
    scope_mode: str
    entry_id: str
    ttl_s: float
    answer_chars: int = 0


class CacheSkip(Event, frozen=True, tag="cache.skip"):
    reason: str
    scope_mode: str = ""


class CacheError(Event, frozen=True, tag="cache.error"):
    operation: str
    error_type: str
    message: str = ""
    scope_mode: str = ""


class CacheEvicted(Event, frozen=True, tag="cache.evicted"):
    """Entries removed for ``reason``: ``lru``, ``ttl``, ``write``, ``purge``, ..."""

    reason: str
    count: int
    scope: str = ""


class Invalidated(Event, frozen=True, tag="cache.invalidated"):
    scope: str
    count: int
    reason: str = "write"


class GuardBlocked(Event, frozen=True, tag="guard.blocked"):
    stage: str
    rule: str


class GuardRedacted(Event, frozen=True, tag="guard.redacted"):
    stage: str
    rule: str
    count: int = 1


class LLMCall(Event, frozen=True, tag="llm.call"):
    model: str
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ok: bool = True
    provider: str = ""
    response_model: str = ""
    error_type: str = ""


class EmbeddingCacheStats(Event, frozen=True, tag="embedding.cache"):
    hits: int
    misses: int


class Feedback(Event, frozen=True, tag="cache.feedback"):
    entry_id: str
    correct: bool


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers events to subscribers; contains and counts their failures."""

    __slots__ = ("_broken", "_subscribers", "failures", "published")

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._broken: set[int] = set()
        self.failures = 0
        self.published = 0

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns a function that removes it."""
        self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            self._subscribers = tuple(
                s for s in self._subscribers if s is not subscriber
            )

        return unsubscribe

    @property
    def active(self) -> bool:
        """Whether anyone listens (lets publishers skip building events)."""
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber. Never raises."""
        self.published += 1
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except (
                Exception
            ) as exc:  # contained: a subscriber must never fail a request
                self.failures += 1
                key = id(subscriber)
                if key not in self._broken:
                    self._broken.add(key)
                    _log.warning(
                        "event subscriber %r raised %s: %s (further failures are "
                        "counted, not logged)",
                        subscriber,
                        type(exc).__name__,
                        exc,
                    )


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of ``event`` (with its ``event`` tag)."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result
