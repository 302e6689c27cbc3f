"""The SQLite backend: one WAL-mode file that survives restarts.

One table, ``entries``, holds every entry with its vector as a float32 blob, so the
engine can rebuild its indexes from the rows at warm-up. All SQL runs on one
connection in a worker thread (``anyio.to_thread.run_sync``) behind a lock, so the
event loop never waits on the disk. ``sqlite3`` errors are translated here: a file
that cannot be opened or written raises
:class:`~stagecache.errors.BackendUnavailable`; a corrupted or foreign file raises
:class:`~stagecache.errors.CacheError` naming the file and the fix, never a silent
wrong answer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from stagecache._erase import secure_delete, truncate_wal
from stagecache.cache._backend import Change, Entry
from stagecache.cache._settings import KeyParts
from stagecache.errors import BackendUnavailable, CacheError

__all__ = ["SqliteBackend"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    entry_id TEXT PRIMARY KEY,
    scope_key TEXT NOT NULL,
    scope_mode TEXT NOT NULL,
    user_id TEXT,
    query TEXT NOT NULL,
    answer TEXT NOT NULL,
    model_id TEXT NOT NULL,
    instruction_hash TEXT NOT NULL,
    context_fingerprint TEXT NOT NULL,
    vector BLOB NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    last_used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    positive INTEGER NOT NULL DEFAULT 0,
    negative INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_scope ON entries (scope_key);
CREATE INDEX IF NOT EXISTS entries_user ON entries (user_id);
"""
_COLUMNS = (
    "entry_id, scope_key, scope_mode, user_id, query, answer, model_id, "
    "instruction_hash, context_fingerprint, vector, metadata, created_at, "
    "expires_at, last_used, hits, positive, negative"
)
_INSERT = f"INSERT OR REPLACE INTO entries ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"
_MISSING = ("unable to open", "disk i/o", "readonly", "database is locked", "full")


class SqliteBackend:
    """Entries in a SQLite file (WAL journal, one connection, writes in a thread).

    Args:
        path: the database file; created with its parent directory if missing.
        busy_timeout_s: how long to wait for a lock held by another process.
    """

    __slots__ = ("_busy_timeout_s", "_conn", "_lock", "path")
    name = "sqlite"
    stores_vectors = True

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Open (or create) the file and check that it is a healthy cache file."""
        if self._conn is None:
            await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailable(
                f"{self.path}: cannot open the cache file: {exc}"
            ) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode loses at most the last commits on power loss, never
            # consistency; a cache can afford that for 10x cheaper commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are overwritten with zeros (SQLite's upstream default
            # leaves them in free space): a purge must not leave bytes behind.
            secure_delete(conn, self.path)
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {row}")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc, "open") from exc
        self._conn = conn

    async def aclose(self) -> None:
        """Close the connection; idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close)

    def _translate(self, exc: sqlite3.Error, operation: str) -> CacheError:
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and any(
            m in text for m in _MISSING
        ):
            return BackendUnavailable(f"{self.path}: {operation} failed: {exc}")
        return CacheError(
            f"{self.path}: {operation} failed: {exc}. The file is not a readable "
            "stagecache SQLite file (corrupted or foreign): delete it (the cache "
            "starts empty) or point backend.path elsewhere"
        )

    async def _run(self, operation: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            conn = self._conn
            if conn is None:
                raise CacheError(f"{self.path}: the sqlite backend is not open")
            with self._lock:
                try:
                    with conn:  # one transaction: commit, or roll back on error
                        return fn(conn)
                except sqlite3.Error as exc:
                    raise self._translate(exc, operation) from exc

        return await anyio.to_thread.run_sync(call)

    async def put(self, entry: Entry) -> None:
        """Insert or replace ``entry``."""
        row = _to_row(entry)
        sql = _INSERT
        await self._run("put", lambda c: c.execute(sql, row))

    async def put_many(self, entries: Sequence[Entry]) -> None:
        """Insert or replace many entries in one transaction."""
        rows = [_to_row(e) for e in entries]
        sql = _INSERT
        await self._run("put", lambda c: c.executemany(sql, rows))

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """The entries that exist among ``entry_ids``."""
        ids = list(entry_ids)
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT {_COLUMNS} FROM entries WHERE entry_id IN ({marks})"
        rows = await self._run("get", lambda c: c.execute(sql, ids).fetchall())
        return {e.entry_id: e for e in map(self._from_row, rows)}

    async def touch(
        self,
        entry_id: str,
        *,
        last_used: float,
        hits: int,
        positive: int,
        negative: int,
    ) -> None:
        """Update the counters of one entry."""
        sql = (
            "UPDATE entries SET last_used = ?, hits = ?, positive = ?, negative = ? "
            "WHERE entry_id = ?"
        )
        args = (last_used, hits, positive, negative, entry_id)
        await self._run("touch", lambda c: c.execute(sql, args))

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Delete by id; returns how many existed."""
        ids = [(i,) for i in entry_ids]
        if not ids:
            return 0
        return await self._run(
            "delete",
            lambda c: (
                c.executemany("DELETE FROM entries WHERE entry_id = ?", ids).rowcount
            ),
        )

    async def delete_scope(self, scope_key: str) -> int:
        """Delete every entry of a scope."""
        sql = "DELETE FROM entries WHERE scope_key = ?"
        return await self._run(
            "delete", lambda c: c.execute(sql, (scope_key,)).rowcount
        )

    async def delete_user(self, user_id: str) -> int:
        """Delete every entry attributed to ``user_id``, to the byte.

        The rows are overwritten on delete (``secure_delete``), then the WAL,
        which still holds the pages as they were before, is checkpointed and
        truncated: once this returns, no byte of the user's rows is left in the
        database file or its WAL.
        """
        sql = "DELETE FROM entries WHERE user_id = ?"
        removed = await self._run(
            "delete", lambda c: c.execute(sql, (user_id,)).rowcount
        )
        await self._erase_wal()
        return removed

    async def _erase_wal(self) -> None:
        """Checkpoint the WAL into the file and truncate it (after a purge)."""

        def call() -> None:
            conn = self._conn
            if conn is None:
                raise CacheError(f"{self.path}: the sqlite backend is not open")
            with self._lock:
                try:
                    truncate_wal(conn, self.path)
                except sqlite3.Error as exc:
                    raise self._translate(exc, "checkpoint") from exc

        await anyio.to_thread.run_sync(call)

    async def clear(self) -> int:
        """Delete everything."""
        return await self._run(
            "clear", lambda c: c.execute("DELETE FROM entries").rowcount
        )

    async def count(self) -> int:
        """Number of entries."""
        row = await self._run(
            "count", lambda c: c.execute("SELECT count(*) FROM entries").fetchone()
        )
        return int(row[0])

    async def scan(
        self, scope_key: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[list[Entry]]:
        """Every entry (of one scope, or all), in batches, ordered by rowid."""
        last = -1
        where = "rowid > ?" + (" AND scope_key = ?" if scope_key is not None else "")
        sql = f"SELECT rowid, {_COLUMNS} FROM entries WHERE {where} "
        sql += "ORDER BY rowid LIMIT ?"
        while True:
            args: tuple[Any, ...] = (
                (last, scope_key, batch) if scope_key is not None else (last, batch)
            )
            rows = await self._run("scan", partial(_fetch, sql, args))
            if not rows:
                return
            last = rows[-1][0]
            yield [self._from_row(r[1:]) for r in rows]

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Other processes' writes are picked up at the next warm-up, not live."""
        return _noop

    def _from_row(self, row: Sequence[Any]) -> Entry:
        try:
            return Entry(
                entry_id=row[0],
                scope_key=row[1],
                scope_mode=row[2],
                user_id=row[3],
                query=row[4],
                answer=row[5],
                parts=KeyParts(row[6], row[7], row[8]),
                vector=bytes(row[9]),
                metadata=msgspec.json.decode(row[10], type=dict[str, str]),
                created_at=float(row[11]),
                expires_at=float(row[12]),
                last_used=float(row[13]),
                hits=int(row[14]),
                positive=int(row[15]),
                negative=int(row[16]),
            )
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            raise CacheError(
                f"{self.path}: entry {row[0]!r} is malformed ({exc}); the file is "
                "corrupted or was written by another program: delete it or point "
                "backend.path elsewhere"
            ) from exc


def _to_row(entry: Entry) -> tuple[Any, ...]:
    p = entry.parts
    return (
        entry.entry_id,
        entry.scope_key,
        entry.scope_mode,
        entry.user_id,
        entry.query,
        entry.answer,
        p.model_id,
        p.instruction_hash,
        p.context_fingerprint,
        entry.vector,
        msgspec.json.encode(entry.metadata).decode(),
        entry.created_at,
        entry.expires_at,
        entry.last_used,
        entry.hits,
        entry.positive,
        entry.negative,
    )


def _fetch(sql: str, args: tuple[Any, ...], conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(sql, args).fetchall()


def _noop() -> None:
    return None
