"""Cache settings: strict, frozen msgspec Structs, checked once by ``check()``.

The Structs decode straight from the ``[cache]`` table of a pipeline TOML file
(unknown fields are an error). ``check()`` validates values that a type alone cannot
express and raises :class:`~stagecache.errors.ConfigError` naming the field, the bad
value and the fix. Every number has its bounds in its type, checked by
:func:`stagecache._validate.check_numbers`, the code that checks every config
section; ``ttl_patterns`` are compiled by RE2 (:mod:`stagecache._regex`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from stagecache._regex import compile_config_regex
from stagecache._validate import Seconds, check_numbers
from stagecache.errors import ConfigError

__all__ = [
    "DEFAULT_THRESHOLD",
    "BackendSettings",
    "CacheSettings",
    "KeyParts",
    "TtlPattern",
]

#: The cosine floor of the cosine rules (``none``, ``structural``, no verifier)
#: when ``[cache] threshold`` is not set.
DEFAULT_THRESHOLD = 0.92

_SCOPES = ("per_user", "per_session", "shared")
_BACKENDS = ("memory", "sqlite", "redis")


#: The longest TTL: ten years.
MAX_TTL_S = 10 * 365 * 86_400.0
Ttl = Annotated[float, msgspec.Meta(gt=0, le=MAX_TTL_S)]

#: An entry count, 1 to ``high``.
Entries = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class TtlPattern(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A regex searched in the query and the TTL it gives; the first match wins.

    The pattern is RE2 syntax (no backreferences or lookaround; see
    ``stagecache._regex``) and must not match the empty string.
    """

    pattern: str
    ttl_s: Ttl


class BackendSettings(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Where entries live.

    Attributes:
        kind: ``memory`` (default, lost on exit) or ``sqlite`` (a local file that
            survives restarts; indexes are rebuilt from it at warm-up).
        path: the SQLite file (required for ``sqlite``).
        busy_timeout_s: how long SQLite waits for a lock held by another process.
        redis_url: ``redis`` only (see docs/redis.md): ``redis://[user:pw@]host:
            port/db``, ``rediss://`` for TLS, or ``unix:///path``.
        redis_namespace: prefix of every key; workers sharing a cache share it.
        redis_username: ACL user (overrides the URL's).
        redis_password: ACL password (overrides the URL's; default: the
            ``STAGECACHE_REDIS_PASSWORD`` variable).
        redis_tls_ca_file: CA bundle that signed the server's TLS certificate.
        redis_socket_timeout_s: limit of every Redis call (default: half of
            ``timeout_s``).
        redis_stream_maxlen: change events kept; a worker further behind resyncs.
        encrypt_values: seal queries, answers, metadata and vectors with
            AES-256-GCM (``sqlite`` and ``redis``), key from
            ``STAGECACHE_CACHE_KEY`` (32 bytes, base64).
        ephemeral_key: with ``encrypt_values`` and no key set, use a random one.
        encryption_old_keys: names of environment variables holding more keys
            to read with (a rotation; ``stagecache reencrypt`` rewrites every
            entry under the current key). Keys never go in the file itself.
    """

    kind: Literal["memory", "sqlite", "redis"] = "memory"
    path: str | None = None
    busy_timeout_s: Seconds = 5.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "stagecache"
    redis_username: str | None = None
    redis_password: str | None = None
    redis_tls_ca_file: str | None = None
    redis_socket_timeout_s: Seconds | None = None
    redis_stream_maxlen: Annotated[int, msgspec.Meta(ge=100, le=100_000_000)] = 100_000
    encrypt_values: bool = False
    ephemeral_key: bool = False
    encryption_old_keys: list[str] = []


class KeyParts(msgspec.Struct, frozen=True):
    """The parts of a cache key that must match exactly (besides the scope).

    Attributes:
        model_id: the model that wrote the answer.
        instruction_hash: hash of the system instructions (and tool specs).
        context_fingerprint: hash of the memory context (and of the history when
            ``cache_multi_turn`` is on), of the request fingerprint (the parameters
            that change the answer, ``stagecache._request_params``) and of the
            per-request cache namespace; the last two only when present, so a
            plain request keys as in databases written before they existed.
    """

    model_id: str
    instruction_hash: str
    context_fingerprint: str


class CacheSettings(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Settings of the semantic cache (see DESIGN.md section 3).

    Attributes:
        scope: ``per_user`` (default), ``per_session`` or ``shared``.
        shared_data_acknowledged: must be true for ``shared``.
        threshold: a hard cosine floor, in (0, 1]: no hit below it, whatever
            the verifier (the learned kinds keep their calibrated decision above
            it). None (the default): the verifier's own floor, calibrated for the
            embedder (0.92 for the cosine rules and without a verifier). The knob
            of the default verifier is ``[verifier] max_wrong_hit_rate``.
        default_ttl: seconds an entry lives unless a ``ttl_patterns`` entry matches.
        sliding_ttl: a hit extends the entry's life to now + its TTL (the TTL
            it was stored with), never past ``max_lifetime_s`` after it was
            written; off by default (an entry expires its TTL after the write).
        max_lifetime_s: with ``sliding_ttl``, the longest an entry lives after
            it was written, however often it is hit (at least ``default_ttl``).
        ttl_patterns: regex on the query -> TTL; the first match wins.
        max_entries_per_user: cap per user across all of that user's scopes (LRU).
        max_total_entries: cap over the whole cache (LRU).
        invalidate_on_write: a tool call that writes evicts the caller's scope.
        cache_multi_turn: cache follow-up turns (history joins the fingerprint).
        top_k: candidates above threshold offered to the verifier, best first.
        flat_max_entries: a scope is promoted from an exact flat matrix to hnswlib
            past this many entries (3072: numpy's exact search is faster up to
            about 3,000 rows, hnswlib past it; benchmarks/results/index.md).
        index_dir: where unloaded (cold) scope indexes and saved indexes go.
        max_hot_scopes: keep at most this many scope indexes in memory; the least
            recently used are unloaded to ``index_dir``.
        timeout_s: a cache operation slower than this is abandoned by the stage.
        negative_feedback_limit: an entry is removed once its negative feedbacks
            outnumber its positive ones by this much.
        hnsw_m: hnswlib graph degree.
        hnsw_ef_construction: hnswlib build-time beam width.
        hnsw_ef_search: hnswlib query-time beam width (recall vs latency).
        backend: where entries live.
    """

    scope: Literal["per_user", "per_session", "shared"] = "per_user"
    shared_data_acknowledged: bool = False
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    default_ttl: Ttl = 3600.0
    sliding_ttl: bool = False
    max_lifetime_s: Ttl = 86_400.0
    ttl_patterns: list[TtlPattern] = []
    max_entries_per_user: Entries = 1000
    max_total_entries: Entries = 100_000
    invalidate_on_write: bool = True
    cache_multi_turn: bool = False
    top_k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    flat_max_entries: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 3072
    index_dir: str | None = None
    max_hot_scopes: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    timeout_s: Seconds = 1.0
    negative_feedback_limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    hnsw_m: Annotated[int, msgspec.Meta(ge=2, le=256)] = 16
    hnsw_ef_construction: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    hnsw_ef_search: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 128
    backend: BackendSettings = BackendSettings()

    def check(self, *, path: str | None = None, prefix: str = "cache") -> None:
        """Validate the values; raise on the first bad one.

        Args:
            path: the config file the settings came from (named in the error).
            prefix: the dotted path of these settings in the config file.

        Raises:
            ConfigError: naming the field, the bad value and the valid choices or fix.
        """

        def fail(name: str, message: str) -> ConfigError:
            return ConfigError(
                message, path=path, field=f"{prefix}.{name}" if prefix else name
            )

        if self.scope not in _SCOPES:
            raise fail("scope", f"{self.scope!r} is not one of {', '.join(_SCOPES)}")
        if self.scope == "shared" and not self.shared_data_acknowledged:
            raise fail(
                "scope",
                "'shared' lets every user see every other user's cached answers "
                "(including any personal data in them); set "
                "shared_data_acknowledged = true to accept that, or use 'per_user'",
            )
        # Every number, by the code that checks every config section.
        check_numbers(self, path=path, prefix=prefix)
        self.ttl_rules(path=path, prefix=prefix)
        if self.sliding_ttl and self.max_lifetime_s < self.default_ttl:
            raise fail(
                "max_lifetime_s",
                f"{self.max_lifetime_s:g} is shorter than default_ttl "
                f"({self.default_ttl:g}): a hit could never extend an entry; set "
                "max_lifetime_s >= default_ttl",
            )
        if self.max_hot_scopes is not None and not self.index_dir:
            raise fail(
                "max_hot_scopes",
                "unloading cold scopes needs a directory: set index_dir too",
            )
        backend = self.backend
        if backend.kind not in _BACKENDS:
            raise fail(
                "backend.kind", f"{backend.kind!r} is not one of {', '.join(_BACKENDS)}"
            )
        if backend.kind == "sqlite" and not backend.path:
            raise fail(
                "backend.path", "the sqlite backend needs a file path, e.g. 'cache.db'"
            )
        from stagecache.cache._redis_config import check_redis

        check_redis(backend, fail)

    def ttl_rules(
        self, *, path: str | None = None, prefix: str = "cache"
    ) -> list[tuple[re.Pattern[str], float]]:
        """``ttl_patterns`` compiled by RE2, with their TTLs, in order.

        Raises:
            ConfigError: a pattern RE2 does not accept or that matches the empty
                string (the field is ``cache.ttl_patterns[i].pattern``).
        """
        where = f"{prefix}.ttl_patterns" if prefix else "ttl_patterns"
        return [
            (
                compile_config_regex(
                    item.pattern, field=f"{where}[{i}].pattern", path=path
                ),
                item.ttl_s,
            )
            for i, item in enumerate(self.ttl_patterns)
        ]
