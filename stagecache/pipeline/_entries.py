"""What an operator sees of the cache: its entries, as records and as JSON lines,
and the hit counts of this process.

An entry is exported as one JSON object per line: every field of
:class:`~stagecache.cache.Entry` (id, scope key and mode, user, tenant, question,
answer, key parts, metadata, timestamps, counters) and the embedding as base64, so
importing a file into another backend (memory, sqlite, redis) recreates the entries
exactly, without loading the embedding model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

import msgspec

from stagecache.cache import SemanticCache
from stagecache.cache._backend import Entry
from stagecache.errors import InputError
from stagecache.pipeline._events import CacheHit, CacheMiss, Event

__all__ = ["HitCounter", "decode_entry", "encode_entry", "iter_entries"]

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Entry)


def encode_entry(entry: Entry) -> bytes:
    """One entry as a JSON line (without the newline)."""
    return _ENCODER.encode(entry)


def decode_entry(line: str | bytes, *, where: str = "") -> Entry:
    """An entry from one exported JSON line.

    Raises:
        InputError: the line is not JSON or not an entry (``where`` names it).
    """
    try:
        return _DECODER.decode(line)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        prefix = f"{where}: " if where else ""
        raise InputError(f"{prefix}not an exported entry ({exc})") from None


def view(entry: Entry, *, vector: bool = False) -> dict[str, Any]:
    """An entry as plain data (for ``--json`` and tables); the vector only if asked."""
    data: dict[str, Any] = msgspec.to_builtins(entry)
    if not vector:
        data.pop("vector", None)
    return data


async def iter_entries(
    engine: SemanticCache,
    *,
    user_id: str | None = None,
    tenant: str | None = None,
    scope_mode: str | None = None,
) -> AsyncIterator[Entry]:
    """Every stored entry, in the backend's order, optionally filtered.

    Args:
        engine: an opened cache.
        user_id: only the entries attributed to this user.
        tenant: only the entries of this tenant (None: any tenant).
        scope_mode: only ``per_user``, ``per_session`` or ``shared`` entries.
    """
    async with aclosing(engine.backend.scan()) as batches:  # type: ignore[type-var]
        async for batch in batches:
            for entry in batch:
                if user_id is not None and entry.user_id != user_id:
                    continue
                if tenant is not None and entry.tenant != tenant:
                    continue
                if scope_mode is not None and entry.scope_mode != scope_mode:
                    continue
                yield entry


def check_ids(entry_ids: Iterable[str]) -> list[str]:
    """Entry ids as given, each checked to be a non-empty string."""
    ids = list(entry_ids)
    for i, entry_id in enumerate(ids):
        if not isinstance(entry_id, str) or not entry_id:
            raise InputError(f"entry_ids[{i}]: an entry id is a non-empty string")
    return ids


class HitCounter:
    """Counts the lookups of this process by scope mode (an event subscriber).

    Tokens saved are the usage stored with each entry that answered (carried on
    the hit event); hits whose entry has no recorded usage add nothing to it.
    """

    __slots__ = ("_modes",)

    def __init__(self) -> None:
        self._modes: dict[str, dict[str, int]] = {}

    def __call__(self, event: Event) -> None:
        """Count one cache event (others are ignored)."""
        if isinstance(event, CacheHit):
            row = self._row(event.scope_mode)
            row["hits"] += 1
            tokens = (event.prompt_tokens or 0) + (event.completion_tokens or 0)
            row["tokens_saved"] += tokens
        elif isinstance(event, CacheMiss):
            self._row(event.scope_mode)["misses"] += 1

    def _row(self, mode: str) -> dict[str, int]:
        row = self._modes.get(mode)
        if row is None:
            row = self._modes[mode] = {"hits": 0, "misses": 0, "tokens_saved": 0}
        return row

    def summary(self) -> dict[str, Any]:
        """Totals and ``by_scope_mode``: hits, misses, hit_rate, tokens_saved."""
        modes = {m: _with_rate(r) for m, r in sorted(self._modes.items())}
        total = {"hits": 0, "misses": 0, "tokens_saved": 0}
        for row in self._modes.values():
            for key in total:
                total[key] += row[key]
        return {**_with_rate(total), "by_scope_mode": modes}


def _with_rate(row: dict[str, int]) -> dict[str, Any]:
    lookups = row["hits"] + row["misses"]
    return {**row, "hit_rate": round(row["hits"] / lookups, 4) if lookups else None}
