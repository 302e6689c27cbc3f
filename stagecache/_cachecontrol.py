"""Per-request cache control: ``run(..., cache=CacheControl(...))``.

One model for every entry point, in LiteLLM's spelling (its proxy's ``cache``
object): the Python API takes a :class:`CacheControl` or a dict, the proxy reads
``extra_body={"cache": {...}}`` and the ``Cache-Control`` request header, the
AutoGen and LangChain adapters pass one through.

=============  ===========================================================
``no-cache``   skip the lookup (a fresh answer), still store it
``no-store``   look up as usual, never store this request's answer
``ttl``        seconds the stored answer lives (instead of the TTL rules)
``s-maxage``   accept a hit only from an entry at most this many seconds old
``namespace``  an extra key part: entries of one namespace never answer another
=============  ===========================================================

The ``Cache-Control`` header maps ``no-cache``, ``no-store``, ``max-age=N`` and
``s-maxage=N`` (both: the oldest hit accepted); other directives are ignored, as
HTTP asks of unknown ones. A malformed value is an :class:`InputError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from stagecache.errors import InputError

__all__ = [
    "CacheControl",
    "coerce_cache_control",
    "http_cache_control",
    "parse_cache_control_header",
]

#: The longest TTL or age accepted: ten years (as ``[cache] default_ttl``).
_MAX_S = 10 * 365 * 86_400.0
_MAX_NAMESPACE = 128
#: Dict spellings accepted, LiteLLM's first; each maps to a field.
_KEYS = {
    "no-cache": "no_cache",
    "no_cache": "no_cache",
    "no-store": "no_store",
    "no_store": "no_store",
    "ttl": "ttl",
    "s-maxage": "s_maxage",
    "s_maxage": "s_maxage",
    "namespace": "namespace",
}


class CacheControl(msgspec.Struct, frozen=True, kw_only=True):
    """What one request asks of the cache (see the module docstring).

    Attributes:
        no_cache: skip the lookup; the fresh answer is still stored.
        no_store: never store this request's answer.
        ttl: seconds the stored entry lives (default: the cache's TTL rules).
        s_maxage: the oldest entry, in seconds, that may answer this request.
        namespace: an extra part of the key (1 to 128 characters).
    """

    no_cache: bool = False
    no_store: bool = False
    ttl: float | None = None
    s_maxage: float | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        for name in ("no_cache", "no_store"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(
                    f"cache.{name.replace('_', '-')}: expected true or false, "
                    f"got {getattr(self, name)!r:.40}"
                )
        for name in ("ttl", "s_maxage"):
            _seconds(getattr(self, name), name.replace("_", "-"))
        ns = self.namespace
        if ns is not None and (
            not isinstance(ns, str)
            or not 0 < len(ns) <= _MAX_NAMESPACE
            or not ns.isprintable()
        ):
            raise InputError(
                f"cache.namespace: expected 1 to {_MAX_NAMESPACE} printable "
                f"characters, got {ns!r:.40}"
            )

    @property
    def is_default(self) -> bool:
        """True when it asks for nothing (the cache behaves as without it)."""
        return self == _DEFAULT


def _seconds(value: object, name: str) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or value > _MAX_S
    ):
        raise InputError(
            f"cache.{name}: expected a number of seconds from 0 to {_MAX_S:.0f}, "
            f"got {value!r:.40}"
        )
    if name == "ttl" and value == 0:
        raise InputError("cache.ttl: 0 stores nothing; use no-store instead")


_DEFAULT = CacheControl()


def coerce_cache_control(
    value: CacheControl | Mapping[str, Any] | None,
) -> CacheControl | None:
    """A :class:`CacheControl` from ``run(cache=...)``: one, a dict, or None.

    Dict keys are LiteLLM's (``no-cache``, ``no-store``, ``ttl``, ``s-maxage``,
    ``namespace``) or the field names.

    Raises:
        InputError: an unknown key or a bad value, naming it.
    """
    if value is None or isinstance(value, CacheControl):
        return None if value is None or value.is_default else value
    if not isinstance(value, Mapping):
        raise InputError(
            "cache: expected a stagecache.CacheControl or a dict such as "
            f"{{'no-cache': True}}, got {type(value).__name__}"
        )
    fields: dict[str, Any] = {}
    for key, item in value.items():
        name = _KEYS.get(key) if isinstance(key, str) else None
        if name is None:
            valid = ", ".join(k for k in _KEYS if "_" not in k)
            raise InputError(f"cache.{key!s:.40}: unknown; valid keys are {valid}")
        if item is not None:
            fields[name] = item
    control = CacheControl(**fields)
    return None if control.is_default else control


def parse_cache_control_header(header: str) -> CacheControl | None:
    """A :class:`CacheControl` from an HTTP ``Cache-Control`` request header.

    Raises:
        InputError: a ``max-age``/``s-maxage`` that is not a number of seconds.
    """
    fields: dict[str, Any] = {}
    for raw in header.split(","):
        directive, _, arg = raw.strip().partition("=")
        directive = directive.strip().lower()
        arg = arg.strip().strip('"')
        if directive in ("no-cache", "no-store"):
            fields[_KEYS[directive]] = True
        elif directive in ("max-age", "s-maxage"):
            if not arg.isdigit():
                raise InputError(
                    f"Cache-Control: {directive}={arg!r:.20} is not a whole number "
                    "of seconds"
                )
            age = min(float(arg), _MAX_S)
            current = fields.get("s_maxage")
            fields["s_maxage"] = age if current is None else min(current, age)
    control = CacheControl(**fields)
    return None if control.is_default else control


def http_cache_control(body_value: Any, header: str | None) -> CacheControl | None:
    """The cache control of an HTTP request: the body's ``cache`` object (LiteLLM's
    ``extra_body={"cache": {...}}``), its fields winning over the ``Cache-Control``
    header's.

    Raises:
        InputError: either is malformed.
    """
    from_header = parse_cache_control_header(header) if header else None
    from_body = coerce_cache_control(body_value) if body_value is not None else None
    if from_header is None or body_value is None:
        return from_body or from_header
    if from_body is None:
        from_body = _DEFAULT
    if isinstance(body_value, Mapping):  # the fields the body names, even False
        named = {_KEYS[k] for k, v in body_value.items() if v is not None}
    else:
        named = set(from_body.__struct_fields__)
    given = {f: getattr(from_body, f) for f in named}
    merged = msgspec.structs.replace(from_header, **given)
    return None if merged.is_default else merged
