"""Bounded metric labels: a value that comes from outside cannot grow the series.

Some labels take values the operator does not choose: the model id of a request
(``gen_ai.request.model``, set by the proxy's or an adapter's client), stage and
guard rule names from config and plugins, error types raised by plugins. Each
distinct value is a new time series in Prometheus, and a value can carry user data
(a model id containing an email). :class:`LabelLimiter` admits, per label key, at
most ``max_values`` distinct values (besides the empty one) that look like
identifiers (1-64 characters of ``A-Z a-z 0-9 . _ : / @ + -``, starting with a
letter or digit) and in which the PII detectors find nothing; anything else is
reported as ``other``. Model ids
with a configured price are always admitted.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

__all__ = ["OTHER", "LabelLimiter"]

#: The value reported for a label value that is not admitted.
OTHER = "other"
_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}")

_log = logging.getLogger("stagecache.exporters")


def _looks_safe(value: str) -> bool:
    if _SHAPE.fullmatch(value) is None:
        return False
    from stagecache.exporters._errors import redact_pii

    return redact_pii(value) == value


class LabelLimiter:
    """Admits at most ``max_values`` distinct, identifier-like values per label.

    Args:
        max_values: distinct values kept per label key; later ones become
            ``other``.
        known: values always admitted (model ids of the price table).

    Thread-safe; an admitted value costs one dict lookup.
    """

    __slots__ = ("_known", "_lock", "_max", "_seen", "_warned")

    def __init__(self, max_values: int = 100, known: Iterable[str] = ()) -> None:
        self._max = max_values
        self._known = frozenset(known)
        self._seen: dict[str, set[str]] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, value: object) -> str:
        """``value`` if admitted for label ``key``, else :data:`OTHER`."""
        if not isinstance(value, str):
            return OTHER
        if not value or value in self._known:
            return value
        seen = self._seen.get(key)
        if seen is not None and value in seen:
            return value
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if value in seen:
                return value
            if len(seen) >= self._max:
                if key not in self._warned:
                    self._warned.add(key)
                    _log.warning(
                        "metric label %s reached %d values; new values are "
                        "reported as %r",
                        key,
                        self._max,
                        OTHER,
                    )
                return OTHER
            if not _looks_safe(value):
                return OTHER
            seen.add(value)
            return value
