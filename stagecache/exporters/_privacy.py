"""What telemetry may say about users: hashes and lengths, unless opted in.

By default no raw user id, query or answer reaches a span, a metric or a log
record: ids become a short sha256, texts become their hash and length. Setting
``include_query_text`` (for debugging, on a system where telemetry is as private
as the data) adds the query text, cut to ``max_chars``.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from typing import Any

__all__ = ["SENSITIVE_KEYS", "RedactSensitive", "query_attributes", "text_hash"]

#: Log keys whose values are user data: replaced by hash and length.
SENSITIVE_KEYS = frozenset(
    {"user_id", "session_id", "tenant", "query", "prompt", "answer", "response", "text"}
)
#: Of those, the ones ``include_query_text`` lets through unchanged.
QUERY_KEYS = frozenset({"query", "prompt"})


def text_hash(text: str) -> str:
    """16 hex digits of the sha256 of ``text`` (stable across processes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def query_attributes(
    query: str, *, include_text: bool = False, max_chars: int = 1000
) -> dict[str, str | int]:
    """Span attributes that describe a query without revealing it by default.

    Args:
        query: the user's text.
        include_text: also add ``stagecache.query.text`` (opt-in, for debugging).
        max_chars: the longest text exported.

    Returns:
        ``stagecache.query.hash`` and ``stagecache.query.length`` (characters), and
        ``stagecache.query.text`` when opted in.
    """
    attrs: dict[str, str | int] = {
        "stagecache.query.hash": text_hash(query),
        "stagecache.query.length": len(query),
    }
    if include_text:
        attrs["stagecache.query.text"] = query[:max_chars]
    return attrs


class RedactSensitive:
    """A structlog processor replacing user data with ``{hash, len}``.

    ``user_id="alice"`` becomes ``user_id_hash="2bd806c97f0e00af"``;
    ``query="..."`` becomes ``query_hash=...`` and ``query_len=...``.

    Args:
        include_query_text: let ``query``/``prompt`` through unchanged (debugging).
    """

    __slots__ = ("_keep",)

    def __init__(self, *, include_query_text: bool = False) -> None:
        self._keep = QUERY_KEYS if include_query_text else frozenset()

    @property
    def include_query_text(self) -> bool:
        """Whether ``query``/``prompt`` values pass unchanged."""
        return bool(self._keep)

    @include_query_text.setter
    def include_query_text(self, value: bool) -> None:
        self._keep = QUERY_KEYS if value else frozenset()

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in SENSITIVE_KEYS.intersection(event_dict):
            if key in self._keep:
                continue
            value = event_dict.pop(key)
            if value is None:
                continue
            text = str(value)
            event_dict[f"{key}_hash"] = text_hash(text)
            if key not in ("user_id", "session_id", "tenant"):
                event_dict[f"{key}_len"] = len(text)
        return event_dict
