"""The ``stagecache`` command.

::

    stagecache demo [--delay 0.5] [--config FILE]   scripted conversation
    stagecache check-config FILE                    validate a pipeline file
    stagecache import FILE.jsonl --user ID          warm a cache with Q/A pairs
    stagecache entries list|show|delete|export|import --config FILE
                                                    see and correct the entries
    stagecache feedback ENTRY_ID --wrong|--correct  feedback on a stored entry
    stagecache stats --config FILE                  hits, misses, cost saved
    stagecache explain "QUESTION" --user U --config FILE
                                                    why it hits or misses
    stagecache purge USER_ID --config FILE          erase a user's cached data
        [--tenant T | --all-tenants]                (default: the user without
                                                    a tenant)
    stagecache serve --upstream URL [--port N] ...  OpenAI-compatible proxy
    stagecache reencrypt --config FILE              rewrite the cache in its mode
    stagecache tune --pairs FILE [--config FILE] --out DIR
                                                    fine-tune the embedder on your
                                                    pairs and the cache's feedback

Every command that prints results takes ``--json``. Only ``demo``, ``import``,
``explain``, ``serve`` and ``tune`` load the embedding model.

Exit codes: 0 success, 1 a failure while running (or nothing found), 2 bad usage
or a bad config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import anyio

from stagecache._cli._commands import check_config, import_pairs, purge, reencrypt
from stagecache._cli._demo import DEMO_SCRIPT, demo
from stagecache._cli._entries import add_entries_arguments, entries, feedback, stats
from stagecache._cli._explain import add_explain_arguments, explain
from stagecache._cli._output import error
from stagecache._cli._tune import add_tune_arguments, tune
from stagecache.errors import StagecacheError
from stagecache.integrations._proxy_config import add_serve_arguments

__all__ = ["DEMO_SCRIPT", "main"]

_DESCRIPTION = (
    "stagecache: a semantic cache for LLM agents. Run a demo, check a pipeline "
    "file, warm, inspect and correct a cache, fine-tune the embedder on your "
    "own pairs, or serve an OpenAI-compatible caching proxy. Exit codes: 0 "
    "success, 1 a failure while running (or nothing found), 2 bad usage or a "
    "bad config."
)


def _version() -> str:
    try:
        return version("stagecache")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stagecache", description=_DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"stagecache {_version()}"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="print the result as JSON (one line)"
    )
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", required=True, help="the pipeline TOML file of the cache"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dem = sub.add_parser(
        "demo",
        parents=[common],
        help="run a scripted conversation through the pipeline",
    )
    dem.add_argument("--delay", type=float, default=0.5, help="model latency, seconds")
    dem.add_argument("--config", help="a pipeline TOML file (default: built-in)")
    check = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate a pipeline TOML file (every error, one line each)",
    )
    check.add_argument("file", help="the pipeline TOML file")
    imp = sub.add_parser(
        "import", parents=[common], help="warm the cache with question/answer pairs"
    )
    imp.add_argument("file", help='JSON lines: {"question": ..., "answer": ...}')
    imp.add_argument("--user", required=True, help="the user whose scope gets them")
    imp.add_argument(
        "--session", default=None, help="the session (per_session scope only)"
    )
    imp.add_argument("--tenant", default=None, help="the user's tenant")
    imp.add_argument("--model", default=None, help="model id to key the entries on")
    imp.add_argument(
        "--config",
        help="a pipeline TOML file with a sqlite or redis backend (without it the "
        "import goes into memory and is gone at exit: a dry run)",
    )
    add_entries_arguments(sub, common, config)
    add_explain_arguments(sub, common, config)
    purge_cmd = sub.add_parser(
        "purge",
        parents=[common, config],
        help="remove every cached entry and memory fact of a user",
    )
    purge_cmd.add_argument("user_id", help="the user to erase")
    who = purge_cmd.add_mutually_exclusive_group()
    who.add_argument(
        "--tenant", default=None, help="the user's tenant (default: no tenant)"
    )
    who.add_argument(
        "--all-tenants",
        action="store_true",
        help="purge the id in every tenant (an erasure request)",
    )
    sub.add_parser(
        "reencrypt",
        parents=[common, config],
        help="rewrite the cache's entries in the configured encryption mode "
        "(encrypt a plaintext cache, rotate keys, or decrypt)",
    )
    add_tune_arguments(sub, common)
    serve = sub.add_parser(
        "serve",
        help="the OpenAI-compatible caching proxy",
        description="OpenAI-compatible caching proxy (needs stagecache[serve]); "
        "identity and what is trusted: docs/security.md",
    )
    add_serve_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stagecache`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args)
        if args.command == "serve":
            try:
                from stagecache.integrations.proxy import serve
            except ImportError as exc:  # the serve extra is not installed
                print(f"stagecache: error: {exc}", file=sys.stderr)
                return 2
            return serve(args)
        runner = {
            "demo": demo,
            "import": import_pairs,
            "entries": entries,
            "feedback": feedback,
            "stats": stats,
            "explain": explain,
            "purge": purge,
            "reencrypt": reencrypt,
            "tune": tune,
        }[args.command]
        return int(anyio.run(runner, args))
    except StagecacheError as exc:
        error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `stagecache entries list | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error at interpreter exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
