"""Validation of the redis settings and the client options they make.

Kept apart from ``_settings`` so that the settings module stays free of Redis
details, and apart from ``_redis`` so that checking a config never imports
``redis``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from stagecache.errors import ConfigError

if TYPE_CHECKING:
    from stagecache.cache._settings import BackendSettings

__all__ = ["PASSWORD_ENV", "check_redis", "client_options", "safe_url"]

PASSWORD_ENV = "STAGECACHE_REDIS_PASSWORD"
_SCHEMES = ("redis", "rediss", "unix")


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparsable url>"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable Redis URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"{safe_url(url)!r} is not a valid URL ({exc})"
    if parts.scheme not in _SCHEMES:
        return (
            f"{safe_url(url)!r} is not a Redis URL: use redis://host:6379/0, "
            "rediss://host:6380/0 for TLS, or unix:///path/to/redis.sock"
        )
    if parts.scheme != "unix":
        if not parts.hostname:
            return f"{safe_url(url)!r} has no host, e.g. redis://127.0.0.1:6379/0"
        db = parts.path.strip("/")
        if db and not db.isdigit():
            return f"{safe_url(url)!r}: the path must be a database number, e.g. /0"
    elif not parts.path:
        return f"{safe_url(url)!r} has no socket path, e.g. unix:///run/redis.sock"
    return None


def check_redis(
    backend: BackendSettings, fail: Callable[[str, str], ConfigError]
) -> None:
    """Validate the redis fields of ``backend``; raise ``fail(field, message)``."""
    from stagecache.cache._crypto import check_old_key_names

    problem = check_old_key_names(backend.encryption_old_keys)
    if problem is not None:
        raise fail("backend.encryption_old_keys", problem)
    if backend.kind not in ("redis", "sqlite") and (
        backend.encrypt_values or backend.encryption_old_keys
    ):
        raise fail(
            "backend.encrypt_values",
            "encryption at rest is for the sqlite and redis backends (the memory "
            "backend stores nothing); set kind = 'sqlite' or 'redis', or "
            "encrypt_values = false",
        )
    if backend.kind != "redis":
        return
    problem = url_problem(backend.redis_url)
    if problem is not None:
        raise fail("backend.redis_url", problem)
    if backend.redis_tls_ca_file is not None and not backend.redis_url.startswith(
        "rediss://"
    ):
        raise fail(
            "backend.redis_tls_ca_file",
            "a CA file is for TLS connections: use a rediss:// redis_url",
        )
    ns = backend.redis_namespace
    if not ns or any(c.isspace() or c in "{}" for c in ns):
        raise fail(
            "backend.redis_namespace",
            f"{ns!r} must be non-empty, without spaces or braces, e.g. 'stagecache'",
        )
    timeout = backend.redis_socket_timeout_s
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise fail(
            "backend.redis_socket_timeout_s", f"{timeout!r} must be > 0 or unset"
        )
    if not isinstance(backend.redis_stream_maxlen, int) or (
        backend.redis_stream_maxlen < 100
    ):
        raise fail(
            "backend.redis_stream_maxlen",
            f"{backend.redis_stream_maxlen!r} must be an integer >= 100",
        )


def client_options(
    *,
    username: str | None,
    password: str | None,
    tls_ca_file: str | None,
    socket_timeout_s: float,
) -> dict[str, Any]:
    """Keyword arguments for ``redis.asyncio.Redis.from_url``.

    The URL carries host, port, database, TLS (``rediss://``) and optionally the
    ACL user and password; explicit ``username``/``password`` (or the
    ``STAGECACHE_REDIS_PASSWORD`` variable) override it.
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "decode_responses": False,
    }
    if username is not None:
        options["username"] = username
    password = password if password is not None else os.environ.get(PASSWORD_ENV)
    if password:
        options["password"] = password
    if tls_ca_file is not None:
        options["ssl_ca_certs"] = tls_ca_file
    return options
