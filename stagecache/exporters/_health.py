"""Health of the telemetry pipeline itself: dropped spans and failed exports.

Telemetry must never fail or slow a request. When the collector is down, or slower
than the traffic, spans pile up in a bounded queue and the excess is dropped. Each
drop and each failed export is counted here (the metrics exporters publish the
counts as ``stagecache_telemetry_*`` series) and logged: once on the first
occurrence, then at most once a minute with the running totals, so a dead collector
does not flood the logs.

The counters are process-wide (one :data:`HEALTH` object) because a process has one
telemetry pipeline, while it may have several metrics exporters that report on it.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["HEALTH", "ExportHealth"]

_log = logging.getLogger("stagecache.exporters")

_LOG_EVERY_S = 60.0


class ExportHealth:
    """Thread-safe counts of dropped spans and failed exports, by signal.

    Attributes:
        dropped: signal (``"traces"``, ``"metrics"``) -> items dropped because the
            queue was full.
        failed: signal -> items whose export failed (collector down, rejected).
        exported: signal -> items exported successfully.
    """

    __slots__ = ("_last_log", "_lock", "dropped", "exported", "failed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_log: dict[str, float] = {}
        self.dropped: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.exported: dict[str, int] = {}

    def record_dropped(self, signal: str, count: int = 1) -> None:
        """Count ``count`` items of ``signal`` dropped by a full queue."""
        with self._lock:
            self.dropped[signal] = self.dropped.get(signal, 0) + count
        self._maybe_log(signal, "dropped (export queue full)")

    def record_failed(self, signal: str, count: int, reason: str = "") -> None:
        """Count ``count`` items of ``signal`` whose export failed."""
        with self._lock:
            self.failed[signal] = self.failed.get(signal, 0) + count
        self._maybe_log(signal, f"failed to export{f' ({reason})' if reason else ''}")

    def record_exported(self, signal: str, count: int) -> None:
        """Count ``count`` items of ``signal`` exported successfully."""
        with self._lock:
            self.exported[signal] = self.exported.get(signal, 0) + count

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of the counters: ``{"dropped": {...}, "failed": {...}, ...}``."""
        with self._lock:
            return {
                "dropped": dict(self.dropped),
                "failed": dict(self.failed),
                "exported": dict(self.exported),
            }

    def _maybe_log(self, signal: str, what: str) -> None:
        now = time.monotonic()
        key = f"{signal}:{what}"
        with self._lock:
            last = self._last_log.get(key)
            if last is not None and now - last < _LOG_EVERY_S:
                return
            self._last_log[key] = now
            dropped = self.dropped.get(signal, 0)
            failed = self.failed.get(signal, 0)
        _log.warning(
            "telemetry %s %s; totals so far: %d dropped, %d failed to export "
            "(requests are not affected; next report in %.0f s at most)",
            signal,
            what,
            dropped,
            failed,
            _LOG_EVERY_S,
        )


#: The process-wide telemetry health counters.
HEALTH = ExportHealth()
