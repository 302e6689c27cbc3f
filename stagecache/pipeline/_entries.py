"""What an operator sees of the cache: its entries, as records and as JSON lines,
and the counter of its hits and misses.

An entry is exported as one JSON object per line: every field of
:class:`~stagecache.cache.Entry` (id, scope key and mode, user, tenant, question,
answer, key parts, metadata, timestamps, counters) and the embedding as base64, so
importing a file into another backend (memory, sqlite, redis) recreates the entries
exactly, without loading the embedding model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from typing import Any

import msgspec

from stagecache.cache import SemanticCache
from stagecache.cache._backend import Entry
from stagecache.cache._tally import LookupTally
from stagecache.errors import InputError
from stagecache.exporters._pricing import ModelPrice, PriceTable, TokenCount
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
    """Counts the cache's lookups by scope mode and model (an event subscriber).

    The counts go to the engine's :class:`~stagecache.cache._tally.LookupTally`,
    which adds them up with those of every process sharing the backend. A hit
    saved the usage stored with the entry that answered (carried on the hit
    event) and, where ``prices`` names the model (or ``"*"``), what that usage
    costs; a hit without either has an unknown cost.

    Args:
        tally: where the counts go.
        prices: USD per 1k tokens by model id.
    """

    __slots__ = ("_prices", "_tally")

    def __init__(
        self, tally: LookupTally, prices: Mapping[str, ModelPrice] | None = None
    ) -> None:
        self._tally = tally
        self._prices = PriceTable(prices)

    def __call__(self, event: Event) -> None:
        """Count one cache event (others are ignored)."""
        if isinstance(event, CacheHit):
            prompt, completion = event.prompt_tokens, event.completion_tokens
            cost = None
            priced = self._prices.price(event.model) is not None
            if priced and prompt is not None and completion is not None:
                cost = self._prices.cost(event.model, TokenCount(prompt, completion))
            self._tally.hit(
                event.scope_mode,
                event.model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=cost,
            )
        elif isinstance(event, CacheMiss):
            self._tally.miss(event.scope_mode, event.model)
