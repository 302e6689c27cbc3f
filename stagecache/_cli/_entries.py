"""``stagecache entries list|show|delete|export|import``, ``feedback`` and ``stats``.

None of them loads the embedding model: they open the configured backend alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from stagecache._cli._open import open_cache
from stagecache._cli._output import emit, error
from stagecache.cache._backend import Entry
from stagecache.cache._tally import summarise
from stagecache.errors import InputError
from stagecache.pipeline._entries import decode_entry, encode_entry, iter_entries, view

__all__ = ["add_entries_arguments", "entries", "feedback", "stats"]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "user_id": args.user,
        "tenant": args.tenant,
        "scope_mode": args.scope_mode,
    }


async def _list(args: argparse.Namespace) -> int:
    async with open_cache(args.config) as api:
        shown = 0
        if not args.json:
            print(f"{'id':<16}  {'mode':<11} {'user':<12} {'hits':>5}  question")
        async for entry in iter_entries(api.engine, **_filters(args)):
            if args.limit is not None and shown >= args.limit:
                break
            shown += 1
            if args.json:
                emit(view(entry), "", as_json=True)
            else:
                user = entry.user_id or "-"
                if entry.tenant:
                    user = f"{entry.tenant}/{user}"
                print(
                    f"{entry.entry_id:<16}  {entry.scope_mode:<11} {user[:12]:<12} "
                    f"{entry.hits:>5}  {entry.query[:60]}"
                )
    if not args.json:
        print(f"{shown} entries", file=sys.stderr)
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with open_cache(args.config) as api:
        entry = await api.get(args.entry_id)
    if entry is None:
        error(f"{args.entry_id}: no such entry")
        return 1
    data = view(entry)
    lines = [f"{k}: {data[k]}" for k in ("entry_id", "scope_mode", "user_id", "tenant")]
    lines += [
        f"question: {entry.query}",
        f"answer: {entry.answer}",
        f"parts: {data['parts']}",
        f"metadata: {entry.metadata}",
        f"created: {_when(entry.created_at)} UTC",
        f"expires: {_when(entry.expires_at)} UTC",
        f"last used: {_when(entry.last_used)} UTC",
        f"hits: {entry.hits}, feedback: +{entry.positive} -{entry.negative}",
    ]
    emit(data, "\n".join(lines), as_json=args.json)
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with open_cache(args.config) as api:
        removed = await api.delete(args.entry_ids)
    missing = len(set(args.entry_ids)) - removed
    emit(
        {"deleted": removed, "not_found": missing},
        f"deleted {removed}" + (f"; {missing} not found" if missing else ""),
        as_json=args.json,
    )
    return 0 if removed else 1


async def _export(args: argparse.Namespace) -> int:
    count = 0
    async with open_cache(args.config) as api:
        if args.output in (None, "-"):
            async for entry in iter_entries(api.engine, **_filters(args)):
                sys.stdout.buffer.write(encode_entry(entry) + b"\n")
                count += 1
            sys.stdout.buffer.flush()
        else:
            async with await anyio.open_file(args.output, "wb") as handle:
                async for entry in iter_entries(api.engine, **_filters(args)):
                    await handle.write(encode_entry(entry) + b"\n")
                    count += 1
    print(f"exported {count} entries", file=sys.stderr)
    return 0


def _read_entries(path: Path) -> list[Entry]:
    """Exported entries of ``path``; errors name the file and the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    found: list[Entry] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            found.append(decode_entry(line, where=f"{path}: line {number}"))
    return found


async def _import(args: argparse.Namespace) -> int:
    batch = _read_entries(Path(args.file))  # before the cache is opened
    async with open_cache(args.config) as api:
        if batch and batch[0].vector and not api.engine.stats()["entries"]:
            # No model here to say the dimension: an empty cache takes the file's.
            api.engine.dim = len(batch[0].vector) // 4
        summary = await api.import_entries(batch)
    emit(
        {
            "stored": summary.stored,
            "evicted": summary.evicted,
            "displaced": summary.displaced,
        },
        f"stored {summary.stored}"
        + (f"; the caps evicted {summary.evicted} of them" if summary.evicted else "")
        + (f" and {summary.displaced} older" if summary.displaced else ""),
        as_json=args.json,
    )
    return 0


async def entries(args: argparse.Namespace) -> int:
    """Run ``stagecache entries ACTION``."""
    action = {
        "list": _list,
        "show": _show,
        "delete": _delete,
        "export": _export,
        "import": _import,
    }[args.action]
    return await action(args)


async def feedback(args: argparse.Namespace) -> int:
    """Run ``stagecache feedback ENTRY_ID --correct|--wrong``."""
    async with open_cache(args.config) as api:
        found = await api.feedback(
            args.entry_id, correct=args.correct, query=args.query
        )
    emit(
        {"entry_id": args.entry_id, "recorded": found},
        f"{args.entry_id}: {'recorded' if found else 'no such entry'}",
        as_json=args.json,
    )
    return 0 if found else 1


async def stats(args: argparse.Namespace) -> int:
    """Run ``stagecache stats``: what the backend holds, and the lookups of every
    process that shares it, per scope mode."""
    held: dict[str, dict[str, int]] = {}
    now = time.time()
    async with open_cache(args.config) as api:
        counted = await api.refresh_stats()
        async for entry in iter_entries(api.engine):
            row = held.setdefault(entry.scope_mode, dict.fromkeys(_HELD, 0))
            row["entries"] += 1
            row["expired"] += entry.expires_at <= now
            row["entry_hits"] += entry.hits
            row["positive"] += entry.positive
            row["negative"] += entry.negative
    lookups = counted["by_scope_mode"]
    none = {k: v for k, v in summarise({}).items() if k in _LOOKUPS}
    modes = {
        mode: {
            **dict.fromkeys(_HELD, 0),
            **held.get(mode, {}),
            **lookups.get(mode, none),
        }
        for mode in sorted(set(held) | set(lookups))
    }
    data = {
        "entries": counted["entries"],
        "users": counted["users"],
        "scopes": counted["scopes"],
        **{k: counted[k] for k in _LOOKUPS},
        "by_scope_mode": modes,
        "by_model": counted["by_model"],
    }
    lines = [
        f"entries {data['entries']}, users {data['users']}, scopes {data['scopes']}",
        f"lookups: {_lookups_line(data)}",
    ]
    for mode, row in modes.items():
        lines.append(
            f"  {mode}: {row['entries']} entries (feedback +{row['positive']} "
            f"-{row['negative']}); {_lookups_line(row)}"
        )
    unpriced = [m for m, r in counted["by_model"].items() if r["unpriced_hits"]]
    if unpriced:
        lines.append(
            "cost unknown for the hits of: "
            + ", ".join(unpriced)
            + " (no price, or no usage stored with the entry; prices in "
            "[pipeline] prices or an exporter's prices)"
        )
    emit(data, "\n".join(lines), as_json=args.json)
    return 0


#: What the backend holds, per scope mode.
_HELD = ("entries", "expired", "entry_hits", "positive", "negative")
#: The lookup counts of every process (``pipeline.cache.stats()``).
_LOOKUPS = (
    "hits",
    "misses",
    "hit_rate",
    "tokens_saved",
    "cost_saved_usd",
    "unpriced_hits",
)


def _lookups_line(row: dict[str, Any]) -> str:
    rate = row.get("hit_rate")
    cost = row.get("cost_saved_usd")
    if cost is None:
        saved = "cost saved unknown"
    else:
        saved = f"cost saved ${cost:.4f}"
        if row.get("unpriced_hits"):
            saved += f" (+ unknown for {row['unpriced_hits']} hits)"
    return (
        f"{row.get('hits', 0)} hits, {row.get('misses', 0)} misses, hit rate "
        f"{'-' if rate is None else f'{rate:.1%}'}, "
        f"{row.get('tokens_saved', 0)} tokens saved, {saved}"
    )


def add_entries_arguments(
    sub: Any, common: argparse.ArgumentParser, config: argparse.ArgumentParser
) -> None:
    """Add ``entries``, ``feedback`` and ``stats`` to the subcommand parsers."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--user", default=None, help="only this user's entries")
    where.add_argument(
        "--tenant", default=None, help="only this tenant's entries (default: any)"
    )
    where.add_argument(
        "--scope-mode",
        choices=("per_user", "per_session", "shared"),
        default=None,
        help="only entries of this scope mode",
    )
    ent = sub.add_parser(
        "entries",
        help="list, show, delete, export or import cached entries",
        description="See and correct what the cache holds; no model is loaded.",
    )
    actions = ent.add_subparsers(dest="action", required=True)
    lst = actions.add_parser(
        "list", parents=[common, config, where], help="one line per entry"
    )
    lst.add_argument("--limit", type=int, default=None, help="show at most N entries")
    show = actions.add_parser(
        "show", parents=[common, config], help="every field of one entry"
    )
    show.add_argument("entry_id", help="the entry id (from `entries list`)")
    delete = actions.add_parser(
        "delete", parents=[common, config], help="remove entries by id"
    )
    delete.add_argument("entry_ids", nargs="+", help="entry ids to remove")
    export = actions.add_parser(
        "export",
        parents=[config, where],
        help="write entries as JSON lines (with their vectors)",
    )
    export.add_argument(
        "-o", "--output", default=None, help="the file to write (default: stdout)"
    )
    imp = actions.add_parser(
        "import",
        parents=[common, config],
        help="write exported entries into this cache, exactly as exported",
    )
    imp.add_argument("file", help="JSON lines written by `entries export`")
    fb = sub.add_parser(
        "feedback", parents=[common, config], help="mark a cached entry right or wrong"
    )
    fb.add_argument("entry_id", help="the entry id (from `entries list`)")
    group = fb.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--correct", dest="correct", action="store_true", help="the answer was right"
    )
    group.add_argument(
        "--wrong",
        dest="correct",
        action="store_false",
        help="the answer was wrong (makes the entry harder to hit, then removes it)",
    )
    fb.add_argument(
        "--query",
        default=None,
        help="the query that got the hit: kept with the verdict in the feedback "
        "log, which `stagecache tune` trains on",
    )
    sub.add_parser(
        "stats",
        parents=[common, config],
        help="entries, hits, misses, hit rate, tokens and cost saved per scope mode",
    )
