"""Counter stores of the lookup counts (:mod:`._tally`), one per shared backend.

- SQLite: the table ``lookup_counts`` of the cache file, one row per (scope mode,
  model), added to with one UPSERT transaction per write.
- Redis: the hash ``<namespace>:lookups``, one field per (counter, scope mode,
  model), added to with ``HINCRBY`` / ``HINCRBYFLOAT`` in one ``MULTI``
  transaction (every worker's increments add up; none overwrites another's).

The rows hold counts, scope modes and model ids only: no user, scope key or text,
so a purge has nothing to find there. ``clear`` leaves them (they are history).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stagecache.cache._tally import COST, FIELDS, CounterStore, Counts, Key

if TYPE_CHECKING:
    from stagecache.cache._redis import RedisBackend
    from stagecache.cache._sqlite import SqliteBackend

__all__ = ["RedisCounts", "SqliteCounts", "counter_store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lookup_counts (
    scope_mode TEXT NOT NULL,
    model TEXT NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    priced_hits INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (scope_mode, model)
)
"""
_COLUMNS = (*FIELDS, COST)
_UPSERT = (
    f"INSERT INTO lookup_counts (scope_mode, model, {', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (2 + len(_COLUMNS)))}) "
    "ON CONFLICT (scope_mode, model) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _COLUMNS)
)
_SELECT = f"SELECT scope_mode, model, {', '.join(_COLUMNS)} FROM lookup_counts"


def counter_store(backend: object) -> CounterStore | None:
    """The counter store of ``backend``; None for a backend of one process
    (memory, or a third-party one), whose counts stay in the process."""
    from stagecache.cache._redis import RedisBackend
    from stagecache.cache._sqlite import SqliteBackend

    if isinstance(backend, SqliteBackend):
        return SqliteCounts(backend)
    if isinstance(backend, RedisBackend):
        return RedisCounts(backend)
    return None


def _counts(values: tuple[Any, ...] | list[Any]) -> Counts:
    counts = Counts()
    for name, value in zip(FIELDS, values, strict=False):
        setattr(counts, name, int(value or 0))
    counts.cost_usd = float(values[len(FIELDS)] or 0.0)
    return counts


class SqliteCounts:
    """The ``lookup_counts`` table of a SQLite cache file."""

    __slots__ = ("_backend", "_ready")

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend
        self._ready = False

    def _select(self, conn: sqlite3.Connection) -> dict[Key, Counts]:
        if not self._ready:
            conn.execute(_SCHEMA)
            self._ready = True
        rows = conn.execute(_SELECT).fetchall()
        return {(str(r[0]), str(r[1])): _counts(r[2:]) for r in rows}

    async def add(self, deltas: Mapping[Key, Counts]) -> dict[Key, Counts]:
        """Add ``deltas`` in one transaction; return the totals after it."""
        rows = [(*key, *(v for _, v in c.items())) for key, c in deltas.items()]

        def run(conn: sqlite3.Connection) -> dict[Key, Counts]:
            if not self._ready:
                conn.execute(_SCHEMA)
                self._ready = True
            conn.executemany(_UPSERT, rows)
            return self._select(conn)

        return await self._backend._run("count lookups", run)

    async def read(self) -> dict[Key, Counts]:
        """The totals."""
        return await self._backend._run("read lookup counts", self._select)


class RedisCounts:
    """The ``<namespace>:lookups`` hash of a Redis namespace."""

    __slots__ = ("_backend",)

    #: Separates counter, scope mode and model id in a field name (the model id
    #: comes last, so it may hold the separator itself).
    SEP = "|"

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend

    def _parse(self, fields: Mapping[Any, Any]) -> dict[Key, Counts]:
        out: dict[Key, Counts] = {}
        for raw, value in fields.items():
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            parts = name.split(self.SEP, 2)
            if len(parts) != 3 or parts[0] not in _COLUMNS:
                continue  # not ours: skip rather than fail a stats read
            counts = out.setdefault((parts[1], parts[2]), Counts())
            text = value.decode() if isinstance(value, bytes) else str(value)
            if parts[0] == COST:
                counts.cost_usd = float(text)
            else:
                setattr(counts, parts[0], int(float(text)))
        return out

    async def add(self, deltas: Mapping[Key, Counts]) -> dict[Key, Counts]:
        """Add ``deltas`` in one ``MULTI`` transaction; return the totals after."""
        backend = self._backend
        client = backend._connected()
        key = backend.key("lookups")
        pipe = client.pipeline(transaction=True)
        for (mode, model), counts in deltas.items():
            for name, value in counts.items():
                if not value:
                    continue
                field = self.SEP.join((name, mode, model))
                if name == COST:
                    pipe.hincrbyfloat(key, field, float(value))
                else:
                    pipe.hincrby(key, field, int(value))
        pipe.hgetall(key)
        replies = await backend._do("count lookups", pipe.execute())
        return self._parse(replies[-1])

    async def read(self) -> dict[Key, Counts]:
        """The totals."""
        backend = self._backend
        client = backend._connected()
        fields = await backend._do(
            "read lookup counts", client.hgetall(backend.key("lookups"))
        )
        return self._parse(fields)
