"""``stagecache check-config``, ``import``, ``purge`` and ``reencrypt``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stagecache._cli._output import emit, error, warn
from stagecache._model import Caller
from stagecache.errors import InputError

__all__ = ["check_config", "import_pairs", "purge", "reencrypt"]


def check_config(args: argparse.Namespace) -> int:
    """Run exactly what ``stagecache.load()`` runs, without warming anything up."""
    from stagecache.config import ConfigErrors, check_file
    from stagecache.errors import ConfigError

    try:
        # The checks load() runs, stage construction included (rule ids, patterns
        # and keys are checked there), without loading a model or opening anything.
        config = check_file(args.file)
    except ConfigError as exc:
        errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
        if args.json:
            problems = [{"field": e.field, "message": str(e)} for e in errors]
            emit({"file": args.file, "ok": False, "errors": problems}, "", as_json=True)
        for one in errors:  # one line each, whatever the message holds
            error(str(one))
        return 2
    kinds = [str(t.get("kind")) for t in config.stages]
    emit(
        {"file": args.file, "ok": True, "stages": kinds},
        f"{args.file}: ok ({len(kinds)} stages: {', '.join(kinds)})",
        as_json=args.json,
    )
    return 0


def read_pairs(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The question/answer objects of a JSON-lines file, and what was wrong with
    the other lines (``line N: ...``).

    Raises:
        InputError: the file is missing or unreadable (nothing is imported).
    """
    pairs: list[dict[str, Any]] = []
    bad: list[str] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    for number, data in enumerate(raw.splitlines(), 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(f"line {number}: not UTF-8 text")
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"line {number}: not JSON ({exc.msg}, column {exc.colno})")
            continue
        if not isinstance(row, dict):
            bad.append(f"line {number}: expected an object with question and answer")
            continue
        pairs.append(row)
    return pairs, bad


async def import_pairs(args: argparse.Namespace) -> int:
    """Warm a cache with question/answer pairs; report what it really holds."""
    import stagecache
    from stagecache.testing import ScriptedLLM

    pairs, bad = read_pairs(Path(args.file))  # before the model is loaded
    llm = ScriptedLLM(lambda p: "", delay_s=0)
    if args.config:
        pipeline = stagecache.load(args.config, llm=llm)
    else:
        pipeline = stagecache.Pipeline.default(llm=llm)
    kept_after_exit = pipeline.cache.engine.settings.backend.kind != "memory"
    if not kept_after_exit:
        warn(
            "the memory backend keeps nothing: these entries are gone when this "
            "command exits (a dry run); pass --config with a sqlite or redis backend"
        )
    total = len(pairs)

    def progress(done: int) -> None:
        if args.json:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        print(f"\r[{bar}] {done}/{total}", end="", file=sys.stderr, flush=True)

    async with pipeline:
        caps = pipeline.cache.engine.settings
        summary = await pipeline.cache.import_pairs(
            pairs,
            caller=Caller(
                user_id=args.user, session_id=args.session, tenant=args.tenant
            ),
            model=args.model,
            progress=progress,
        )
    if not args.json:
        print(file=sys.stderr)
    rejected = summary.rejected + len(bad)
    data = {
        "stored": summary.stored,
        "evicted": summary.evicted,
        "displaced": summary.displaced,
        "skipped": summary.skipped,
        "rejected": rejected,
        "reasons": summary.reasons,
        "bad_lines": bad,
        "persistent": kept_after_exit,
    }
    lines = [f"stored {summary.stored}, skipped {summary.skipped}, rejected {rejected}"]
    if summary.evicted or summary.displaced:
        lines.append(
            f"  evicted {summary.evicted} imported and {summary.displaced} older "
            f"entries: the caps (max_entries_per_user = {caps.max_entries_per_user}, "
            f"max_total_entries = {caps.max_total_entries}) keep the most recent"
        )
    for reason, count in sorted(summary.reasons.items()):
        lines.append(f"  rejected {count}: {reason}")
    lines.extend(f"  rejected: {line}" for line in bad[:20])
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more bad lines")
    if not kept_after_exit:
        lines.append("  (memory backend: nothing was kept)")
    emit(data, "\n".join(lines), as_json=args.json)
    return 0


async def purge(args: argparse.Namespace) -> int:
    """Erase a user's cached data (entries, vectors, embedding-cache rows).

    The model is not loaded: the cache and the embedding-cache file are opened
    alone. Memory facts live in the serving process; erase them there.
    """
    from stagecache._cli._open import open_cache
    from stagecache.cache._scope import check_purge

    # Checked before anything is opened: a bad id opens nothing.
    check_purge(args.user_id, args.tenant, args.all_tenants)
    async with open_cache(args.config) as api:
        removed = await api.purge_user(
            args.user_id, tenant=args.tenant, all_tenants=args.all_tenants
        )
    emit({"removed": removed}, f"removed {removed} entries", as_json=args.json)
    return 0


async def reencrypt(args: argparse.Namespace) -> int:
    """Rewrite every stored entry in the configured encryption mode."""
    from stagecache.cache._core import make_backend
    from stagecache.config import load_config

    settings = load_config(args.config).cache
    backend = make_backend(settings)
    rewrite = getattr(backend, "reencrypt", None)
    if rewrite is None:
        error(
            f"{args.config}: cache.backend.kind = {settings.backend.kind!r} stores "
            "nothing to encrypt; reencrypt is for the sqlite and redis backends"
        )
        return 2
    try:
        done = await rewrite()
    finally:
        await backend.aclose()
    mode = done.mode if ":" not in done.mode else done.mode[:22]
    emit(
        {"rewritten": done.rewritten, "dropped": done.dropped, "mode": mode},
        f"rewrote {done.rewritten} entries ({mode}); dropped {done.dropped} that no "
        "configured key opens or that failed their integrity check",
        as_json=args.json,
    )
    return 0
