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

import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from stagecache._erase import secure_delete, truncate_wal
from stagecache.cache import _sqlite_rows as _rows
from stagecache.cache._backend import Change, Entry
from stagecache.cache._feedbacklog import FeedbackRecord, from_row_entry, to_row_entry
from stagecache.cache._rowcodec import CorruptRow, ForeignKey, RowCodec
from stagecache.errors import BackendUnavailable, CacheError, ConfigError

if TYPE_CHECKING:
    from stagecache.cache._settings import CacheSettings

__all__ = ["SqliteBackend"]

T = TypeVar("T")
_log = logging.getLogger("stagecache.cache")

_MISSING = ("unable to open", "disk i/o", "readonly", "database is locked", "full")


class SqliteBackend:
    """Entries in a SQLite file (WAL journal, one connection, writes in a thread).

    Args:
        path: the database file; created with its parent directory if missing.
        busy_timeout_s: how long to wait for a lock held by another process.
        codec: how rows are checksummed or sealed (default: plain rows with
            checksums; see ``_rowcodec`` and :meth:`from_settings`).

    Raises:
        ConfigError: (at open) the file records another encryption mode or key.
    """

    __slots__ = (
        "_busy_timeout_s", "_callbacks", "_codec", "_conn", "_lock", "_skipped",
        "path",
    )  # fmt: skip
    name = "sqlite"
    stores_vectors = True

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        codec: RowCodec | None = None,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._codec = codec if codec is not None else RowCodec()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Change], None]] = []
        self._skipped = 0

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> SqliteBackend:
        """The backend of ``settings.backend`` (``kind = "sqlite"``).

        Raises:
            ConfigError: no path, or a missing or malformed encryption key.
        """
        b = settings.backend
        if not b.path:
            raise ConfigError(
                "the sqlite backend needs a file path", field="cache.backend.path"
            )
        codec = RowCodec.from_config(
            encrypt=b.encrypt_values,
            ephemeral=b.ephemeral_key,
            old_keys=tuple(b.encryption_old_keys),
        )
        return cls(b.path, busy_timeout_s=b.busy_timeout_s, codec=codec)

    @property
    def encrypted(self) -> bool:
        """Whether rows are sealed with AES-GCM."""
        return self._codec.encrypted

    async def open(self) -> None:
        """Open (or create) the file and check that it is a healthy cache file."""
        if self._conn is None:
            await anyio.to_thread.run_sync(self._open)

    def _open(self, *, check: bool = True) -> None:
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
            # Text that is not UTF-8 (a flipped bit) comes back as bytes, which
            # the row codec rejects, instead of failing the whole query.
            conn.text_factory = _text_or_bytes
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
            if check:
                _rows.prepare(conn, self._codec, where=str(self.path))
            else:
                _rows.upgrade_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc, "open") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def reencrypt(self) -> _rows.Rewritten:
        """Rewrite every row in this backend's mode and record it (the CLI's
        ``stagecache reencrypt``): seal a plaintext file, rotate keys, or decrypt.

        Rows are read with the current key and every ``encryption_old_keys``;
        rows no key opens, or altered ones, are deleted. Run it with the
        workers stopped or configured to accept both keys.
        """

        def run() -> _rows.Rewritten:
            if self._conn is None:
                self._open(check=False)
            conn = self._conn
            assert conn is not None
            with self._lock:
                try:
                    return _rows.rewrite_all(conn, self._codec)
                except sqlite3.Error as exc:
                    raise self._translate(exc, "reencrypt") from exc

        return await anyio.to_thread.run_sync(run)

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
        row = _rows.to_row(entry, self._codec)
        sql = _rows.INSERT
        await self._run("put", lambda c: c.execute(sql, row))

    async def put_many(self, entries: Sequence[Entry]) -> None:
        """Insert or replace many entries in one transaction."""
        rows = [_rows.to_row(e, self._codec) for e in entries]
        sql = _rows.INSERT
        await self._run("put", lambda c: c.executemany(sql, rows))

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """The entries that exist among ``entry_ids``, verified.

        Raises:
            CorruptRow: a row failed its checksum (or GCM tag); it was deleted
                and reported as a ``delete`` change. The lookup is a miss (a
                ``cache.error``), never an altered answer.
        """
        ids = list(entry_ids)
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT rowid, {_rows.COLUMNS} FROM entries WHERE entry_id IN ({marks})"
        found = await self._run("get", lambda c: c.execute(sql, ids).fetchall())
        out, corrupt = await self._decode(found)
        if corrupt:
            raise corrupt[0]
        return out

    async def _decode(
        self, found: Sequence[Sequence[Any]]
    ) -> tuple[dict[str, Entry], list[CorruptRow]]:
        """Verified entries of ``found`` (``rowid, COLUMNS`` rows); altered rows
        are evicted (by rowid: a flipped id may not even be text) and returned."""
        out: dict[str, Entry] = {}
        corrupt: list[CorruptRow] = []
        bad_ids: list[Any] = []
        bad_entries: list[Any] = []
        for row in found:
            try:
                entry = _rows.from_row(row[1:], self._codec)
            except ForeignKey as exc:
                self._skipped += 1
                if self._skipped == 1 or self._skipped % 1000 == 0:
                    _log.warning("cache: %d entries skipped: %s", self._skipped, exc)
                continue
            except CorruptRow as exc:
                corrupt.append(exc)
                bad_ids.append(row[0])
                bad_entries.append(row[1])
                continue
            out[entry.entry_id] = entry
        if bad_ids:
            _log.warning(
                "cache: %s: %d entries failed their integrity check and were "
                "evicted (%s)",
                self.path,
                len(bad_ids),
                corrupt[0],
            )
            marks = ", ".join("?" * len(bad_ids))
            sql = f"DELETE FROM entries WHERE rowid IN ({marks})"
            await self._run("evict", lambda c: c.execute(sql, bad_ids))
            ids = tuple(i for i in bad_entries if isinstance(i, str))
            for callback in list(self._callbacks):
                callback(Change(kind="delete", entry_ids=ids))
        return out, corrupt

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

    async def delete_user(
        self, user_id: str, tenant: str | None = None, *, all_tenants: bool = False
    ) -> int:
        """Delete every entry attributed to ``user_id`` of ``tenant`` (None: no
        tenant), or of every tenant."""
        sql = "DELETE FROM entries WHERE user_id = ?"
        args: tuple[str | None, ...] = (user_id,)
        if not all_tenants:  # IS: NULL matches the user without a tenant
            sql, args = sql + " AND tenant IS ?", (user_id, tenant)
        log = sql.replace("FROM entries", "FROM feedback")

        def erase(c: sqlite3.Connection) -> int:
            c.execute(log, args)  # the user's feedback log goes with the entries
            return int(c.execute(sql, args).rowcount)

        removed = await self._run("delete", erase)
        # The rows are overwritten on delete (``secure_delete``), then the WAL,
        # which still holds the pages as they were before, is checkpointed and
        # truncated: once this returns, no byte of the rows is left in the
        # database file or its WAL.
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
        """Delete everything (the feedback log too)."""

        def erase(c: sqlite3.Connection) -> int:
            c.execute("DELETE FROM feedback")
            return int(c.execute("DELETE FROM entries").rowcount)

        return await self._run("clear", erase)

    async def add_feedback(self, record: FeedbackRecord) -> None:
        """Append one record to the feedback log (sealed like an entry)."""
        row = _rows.to_row(to_row_entry(record), self._codec)
        sql = _rows.FEEDBACK_INSERT
        await self._run("feedback", lambda c: c.execute(sql, row))

    async def feedback_records(
        self, user_id: str | None = None, tenant: str | None = None
    ) -> list[FeedbackRecord]:
        """The feedback log (of ``user_id`` of ``tenant`` when given), oldest
        first; rows that fail their check or need another key are skipped
        (logged)."""
        sql = f"SELECT {_rows.COLUMNS} FROM feedback WHERE 1"
        args: list[str] = []
        if user_id is not None:
            sql, args = sql + " AND user_id = ?", [*args, user_id]
        if tenant is not None:
            sql, args = sql + " AND tenant = ?", [*args, tenant]
        sql += " ORDER BY created_at, rowid"
        rows = await self._run("feedback", lambda c: c.execute(sql, args).fetchall())
        records, skipped = [], 0
        for row in rows:
            try:
                records.append(from_row_entry(_rows.from_row(row, self._codec)))
            except (CorruptRow, ForeignKey):
                skipped += 1
        if skipped:
            _log.warning(
                "cache: %s: %d feedback records skipped (altered, or sealed under "
                "another key)",
                self.path,
                skipped,
            )
        return records

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
        sql = f"SELECT rowid, {_rows.COLUMNS} FROM entries WHERE {where} "
        sql += "ORDER BY rowid LIMIT ?"
        while True:
            args: tuple[Any, ...] = (
                (last, scope_key, batch) if scope_key is not None else (last, batch)
            )
            rows = await self._run("scan", partial(_fetch, sql, args))
            if not rows:
                return
            last = rows[-1][0]
            # Altered rows are evicted and left out (logged), never raised here:
            # one flipped bit must not stop a warm-up.
            entries, _ = await self._decode(rows)
            yield list(entries.values())

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Other processes' writes are picked up at the next warm-up, not live;
        rows evicted because they failed their integrity check are reported."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe


def _fetch(sql: str, args: tuple[Any, ...], conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(sql, args).fetchall()


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw
