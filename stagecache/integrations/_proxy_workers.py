"""``stagecache serve --workers N``: several uvicorn worker processes.

Each worker builds its own pipeline (embedder, per-scope indexes) over one shared
backend, so ``--workers > 1`` is refused with the memory backend (each worker would
have its own cache). The workers must key the credential hash with one identity
secret (:mod:`._proxy_identity`): without a configured one the parent generates a
random secret and hands it to the workers through the environment.

The parent passes the parsed options to the workers as JSON in
``STAGECACHE_SERVE_OPTIONS``; uvicorn's supervisor imports
:func:`app_from_environment` in every worker (an app factory).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
from typing import Any

from stagecache.errors import ConfigError
from stagecache.integrations._proxy_config import IDENTITY_SECRET_ENV

__all__ = [
    "OPTIONS_ENV",
    "app_from_environment",
    "check_workers",
    "listening_socket",
    "run_workers",
]

#: The parsed ``serve`` options, as JSON, handed from the parent to its workers.
OPTIONS_ENV = "STAGECACHE_SERVE_OPTIONS"


def check_workers(args: argparse.Namespace) -> None:
    """Refuse several workers over a per-process backend; share the secret.

    Raises:
        ConfigError: ``--workers > 1`` without ``--config``, or with the memory
            backend.
    """
    if args.workers <= 1:
        return
    kind = "memory"
    if args.config:
        from stagecache.config import check_file

        kind = check_file(args.config).cache.backend.kind
    if kind == "memory":
        raise ConfigError(
            f"--workers {args.workers} needs a shared backend: with the memory "
            "backend each worker would have its own cache; set [cache.backend] "
            'kind = "redis" (or "sqlite") in --config, or use --workers 1',
            field="--workers",
        )
    name = args.identity_secret_env or IDENTITY_SECRET_ENV
    if not os.environ.get(name):
        # Inherited by the workers: every one keys the credential hash alike.
        os.environ[name] = secrets.token_hex(32)


def run_workers(args: argparse.Namespace) -> None:
    """Run ``args.workers`` uvicorn workers until stopped (after ``check_workers``)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    options = {k: v for k, v in vars(args).items() if _is_json(v)}
    os.environ[OPTIONS_ENV] = json.dumps(options)
    config = uvicorn.Config(
        "stagecache.integrations._proxy_workers:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    # Not uvicorn.run(workers=N): its socket has proto 0, so the connections
    # the workers accept never get TCP_NODELAY, and every response waited for
    # the client's delayed ACK (~40 ms a hit instead of ~2 ms).
    sock = listening_socket(args.host, args.port)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for the workers to share, created as TCP (``proto``).

    asyncio sets ``TCP_NODELAY`` only on accepted sockets whose ``proto`` is
    ``IPPROTO_TCP``; an accepted socket inherits the listener's ``proto``, and the
    workers rebuild the listener from its family, type and proto.

    Raises:
        ConfigError: the address cannot be bound (in use, not local).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc}", field="--host/--port"
        ) from None
    sock.set_inheritable(True)
    return sock


def app_from_environment() -> Any:
    """The proxy app of one worker, from the parent's ``STAGECACHE_SERVE_OPTIONS``.

    Raises:
        ConfigError: the variable is missing (not started by ``stagecache serve``).
    """
    from stagecache.integrations._proxy_config import settings_from_namespace
    from stagecache.integrations.proxy import create_app

    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        raise ConfigError(
            f"{OPTIONS_ENV} is not set: start workers with `stagecache serve "
            "--workers N`",
            field=OPTIONS_ENV,
        )
    args = argparse.Namespace(**json.loads(raw))
    return create_app(settings_from_namespace(args))


def _is_json(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
