"""The proxy's settings and its command line (``stagecache serve``).

This module imports no web framework: ``stagecache --help`` and ``stagecache serve
--help`` work without the ``serve`` extra, and the ``stagecache`` command builds
its ``serve`` subcommand from :func:`add_serve_arguments`, so every option is
listed, with its help, in both places.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from stagecache._model import Caller
from stagecache.errors import ConfigError, InputError

__all__ = [
    "IDENTITY_SECRET_ENV",
    "MIN_SECRET_CHARS",
    "ProxySettings",
    "add_serve_arguments",
    "load_api_keys",
    "settings_from_namespace",
]

#: Read when ``--identity-secret-env`` is not given.
IDENTITY_SECRET_ENV = "STAGECACHE_IDENTITY_SECRET"
#: A shorter identity secret is refused: it would make the credential hash guessable.
MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class ProxySettings:
    """What the proxy needs.

    Attributes:
        upstream: base URL of the OpenAI-compatible upstream (``.../v1``).
        upstream_key: bearer key for the upstream (None: pass the client's
            ``Authorization`` through when no ``api_keys`` are configured). With
            it and without ``api_keys`` nothing authenticates the client, so no
            request is cached (see docs/security.md).
        api_keys: proxy key -> caller; empty: identity from the client's upstream
            credential (a keyed hash of it is the tenant), narrowed by headers.
        identity_secret: the HMAC key of that hash (at least 16 characters).
            Workers that share a backend need the same one; None: a random
            secret per process (entries do not outlive it for other workers).
        admin_key: bearer key of the admin endpoints (None: admin disabled).
        models: allowed model ids (empty: any).
        max_body_bytes: larger request bodies get 413.
        read_only_tools: tools whose calls do not evict the caller's scope.
        config_path: a pipeline TOML file (default: the built-in chain).
        timeout_s: upstream request timeout.
        chunk_chars: size of the content pieces of a replayed stream.
    """

    upstream: str
    upstream_key: str | None = None
    api_keys: dict[str, Caller] = field(default_factory=dict)
    identity_secret: str | None = field(default=None, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    models: frozenset[str] = frozenset()
    max_body_bytes: int = 1_000_000
    read_only_tools: frozenset[str] = frozenset()
    config_path: str | None = None
    timeout_s: float = 120.0
    chunk_chars: int = 24

    def __post_init__(self) -> None:
        secret = self.identity_secret
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"too short ({len(secret)} characters); use at least "
                f"{MIN_SECRET_CHARS} random characters, e.g. `openssl rand -hex 32`",
                field="identity_secret",
            )


def load_api_keys(path: str | Path) -> dict[str, Caller]:
    """Read ``{"key": "user"}`` or ``{"key": {"user_id", "tenant"}}`` JSON.

    Raises:
        InputError: the file is not such an object.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read API keys: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a JSON object of key -> user")
    keys: dict[str, Caller] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            keys[key] = Caller(user_id=value)
        elif isinstance(value, dict) and isinstance(value.get("user_id"), str):
            keys[key] = Caller(user_id=value["user_id"], tenant=value.get("tenant"))
        else:
            raise InputError(f"{path}: key {key[:4]}...: expected a user id")
    return keys


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, not {port}")
    return port


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as http://127.0.0.1:8000/v1, not {text!r}"
        )
    return text


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``stagecache serve`` to ``parser``."""
    add = parser.add_argument
    add(
        "--upstream",
        required=True,
        type=_url,
        metavar="URL",
        help="base URL of the OpenAI-compatible upstream, e.g. http://host:8000/v1",
    )
    add(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="interface to listen on (default: %(default)s, this machine only; "
        "0.0.0.0 exposes the proxy to the network)",
    )
    add(
        "--port",
        type=_port,
        default=8080,
        metavar="PORT",
        help="port to listen on (default: %(default)s)",
    )
    add("--config", metavar="FILE", help="pipeline TOML file (default: built-in)")
    add(
        "--upstream-key-env",
        metavar="NAME",
        help="variable holding the upstream key; the client's Authorization is "
        "then not forwarded, and without --api-keys nothing is cached",
    )
    add(
        "--api-keys",
        metavar="FILE",
        help='JSON file {"proxy key": "user" | {"user_id", "tenant"}}: every '
        "request needs a listed key and runs as its user",
    )
    add(
        "--identity-secret-env",
        metavar="NAME",
        help="variable holding the secret (16+ characters) that keys the hash "
        "of client credentials; workers sharing a backend need the same one "
        f"(default: ${IDENTITY_SECRET_ENV} when set, else random per process)",
    )
    add(
        "--admin-key-env",
        metavar="NAME",
        help="variable holding the admin key of /admin/* (default: admin off)",
    )
    add(
        "--models",
        default="",
        metavar="LIST",
        help="comma-separated model allow-list; other models get 404 (default: any)",
    )
    add(
        "--max-body-bytes",
        type=_positive_int,
        default=1_000_000,
        metavar="N",
        help="larger request bodies get 413 (default: %(default)s)",
    )
    add(
        "--read-only-tools",
        default="",
        metavar="LIST",
        help="comma-separated tools whose calls do not evict the caller's cache",
    )
    add(
        "--timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="upstream request timeout (default: %(default)s)",
    )
    add(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes (default: %(default)s); more than 1 needs a shared "
        "backend in --config (redis, or sqlite: see docs/integrations.md)",
    )
    add(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        metavar="LEVEL",
        help="uvicorn's log level: critical, error, warning, info, debug, trace "
        "(default: %(default)s)",
    )


def _env(name: str | None, option: str) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set", field=option)
    return value


def _split(text: str) -> frozenset[str]:
    return frozenset(item.strip() for item in text.split(",") if item.strip())


def settings_from_namespace(args: argparse.Namespace) -> ProxySettings:
    """Settings from parsed ``stagecache serve`` arguments.

    Raises:
        ConfigError: a named variable is unset, or the identity secret is short.
        InputError: the API key file cannot be read.
    """
    secret = _env(args.identity_secret_env, "--identity-secret-env")
    if secret is None:
        secret = os.environ.get(IDENTITY_SECRET_ENV) or None
    return ProxySettings(
        upstream=args.upstream,
        upstream_key=_env(args.upstream_key_env, "--upstream-key-env"),
        api_keys=load_api_keys(args.api_keys) if args.api_keys else {},
        identity_secret=secret,
        admin_key=_env(args.admin_key_env, "--admin-key-env"),
        models=_split(args.models),
        max_body_bytes=args.max_body_bytes,
        read_only_tools=_split(args.read_only_tools),
        config_path=args.config,
        timeout_s=args.timeout,
    )
