"""Rows of the SQLite backend: schema, encoding, the recorded mode, migrations.

The ``entries`` table holds one row per entry; its values are written by the
shared :class:`~stagecache.cache._rowcodec.RowCodec`: plain (``query``,
``answer``, ``metadata``, ``vector`` in the open plus ``checksum``) or sealed
(``sealed`` holds them encrypted; the plain columns are empty). The
``stagecache_meta`` table records the file's mode (``encryption`` row: ``plain``,
``aes256gcm:<key fingerprint>`` or ``ephemeral``).

A file written before format 2 has neither the two columns nor the mode: at open
the columns are added and, if the worker is plain, every row gets its checksum
in one transaction (the rows are trusted as they are at that moment) and the
mode ``plain`` is recorded. A worker with encryption on refuses such a file
until ``stagecache reencrypt`` has sealed it (:func:`rewrite_all`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from stagecache.cache._backend import Entry
from stagecache.cache._crypto import PLAIN
from stagecache.cache._rowcodec import (
    CorruptRow,
    ForeignKey,
    RowCodec,
    Stored,
)
from stagecache.cache._settings import KeyParts

__all__ = [
    "COLUMNS",
    "FEEDBACK_INSERT",
    "INSERT",
    "SCHEMA",
    "Rewritten",
    "from_row",
    "prepare",
    "rewrite_all",
    "to_row",
    "upgrade_schema",
]

SCHEMA = """
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
    negative INTEGER NOT NULL DEFAULT 0,
    tenant TEXT
);
CREATE INDEX IF NOT EXISTS entries_scope ON entries (scope_key);
CREATE INDEX IF NOT EXISTS entries_user ON entries (user_id);
CREATE TABLE IF NOT EXISTS feedback (
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
    negative INTEGER NOT NULL DEFAULT 0,
    sealed BLOB,
    checksum BLOB,
    tenant TEXT
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user_id);
CREATE TABLE IF NOT EXISTS stagecache_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
#: Columns added by format 2 (ALTER TABLE on an older file).
_ADDED = (("sealed", "BLOB"), ("checksum", "BLOB"))
# Files written before entries recorded their tenant get the column, filled from
# the scope key (JSON [mode, tenant, user, session]) where it is one. The tenant
# is not part of the checksum: the scope key, which is, already holds it.
_ADD_TENANT = (
    "ALTER TABLE entries ADD COLUMN tenant TEXT",
    "UPDATE entries SET tenant = json_extract(scope_key, '$[1]') "
    "WHERE json_valid(scope_key) AND json_type(scope_key, '$[1]') = 'text'",
)
COLUMNS = (
    "entry_id, scope_key, scope_mode, user_id, query, answer, model_id, "
    "instruction_hash, context_fingerprint, vector, metadata, created_at, "
    "expires_at, last_used, hits, positive, negative, sealed, checksum, tenant"
)
INSERT = f"INSERT OR REPLACE INTO entries ({COLUMNS}) VALUES ({', '.join('?' * 20)})"
#: The feedback log (``_feedbacklog``): entry-shaped rows, sealed the same way.
FEEDBACK_INSERT = INSERT.replace("INTO entries", "INTO feedback")
_UPDATE = (
    "UPDATE {table} SET query = ?, answer = ?, metadata = ?, vector = ?, "
    "sealed = ?, checksum = ? WHERE entry_id = ?"
)
_MODE = "encryption"


class Rewritten(NamedTuple):
    """What a rewrite of every row did."""

    rewritten: int
    dropped: int
    mode: str


def to_row(entry: Entry, codec: RowCodec) -> tuple[Any, ...]:
    """The 20 column values of ``entry`` (values sealed or checksummed)."""
    s = codec.encode(entry)
    p = entry.parts
    return (
        entry.entry_id, entry.scope_key, entry.scope_mode, entry.user_id,
        s.query, s.answer, p.model_id, p.instruction_hash, p.context_fingerprint,
        s.vector, s.metadata, entry.created_at, entry.expires_at, entry.last_used,
        entry.hits, entry.positive, entry.negative, s.sealed, s.checksum,
        entry.tenant,
    )  # fmt: skip


def _split(row: Sequence[Any]) -> tuple[Entry, Stored]:
    try:
        shell = Entry(
            entry_id=row[0],
            scope_key=row[1],
            scope_mode=row[2],
            user_id=row[3],
            query="",
            answer="",
            parts=KeyParts(row[6], row[7], row[8]),
            created_at=float(row[11]),
            expires_at=float(row[12]),
            last_used=float(row[13]),
            hits=int(row[14]),
            positive=int(row[15]),
            negative=int(row[16]),
            tenant=row[19],
        )
    except (TypeError, ValueError) as exc:
        raise CorruptRow(f"entry {row[0]!r}: malformed ({exc})") from exc
    return shell, Stored(row[4], row[5], row[10], row[9], row[17], row[18])


def from_row(row: Sequence[Any], codec: RowCodec) -> Entry:
    """The verified entry of a row (``COLUMNS`` order).

    Raises:
        CorruptRow: altered or malformed (a legacy row after migration too).
        ForeignKey: sealed under a key this worker does not hold.
    """
    shell, stored = _split(row)
    return codec.decode(shell, stored)


def prepare(conn: sqlite3.Connection, codec: RowCodec, *, where: str) -> None:
    """Create or upgrade the schema, then check (or record) the file's mode.

    Raises:
        ConfigError: the file's mode or key is not this worker's.
        sqlite3.Error: the file is not a usable database.
    """
    upgrade_schema(conn)
    recorded = _mode(conn)
    if recorded is None:
        rows = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        if rows:
            # A file of stagecache < format 2: plaintext rows without checksums.
            codec.check(PLAIN, where)
            rewrite_all(conn, codec)
            return
        _set_mode(conn, codec.mode)  # a new file; another process may be first
        recorded = _mode(conn) or codec.mode
    codec.check(recorded, where)


def upgrade_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or add the format 2 columns to an older file."""
    conn.executescript(SCHEMA)
    have = {r[1] for r in conn.execute("PRAGMA table_info(entries)")}
    with conn:
        for name, kind in _ADDED:
            if name not in have:
                conn.execute(f"ALTER TABLE entries ADD COLUMN {name} {kind}")
        if "tenant" not in have:
            for sql in _ADD_TENANT:
                conn.execute(sql)


def rewrite_all(conn: sqlite3.Connection, codec: RowCodec) -> Rewritten:
    """Rewrite every row in ``codec``'s mode and record it (one transaction).

    Rows are read in any mode and with any of the codec's keys; rows that no key
    opens or that fail their check are deleted. Deleted and overwritten bytes are
    zeroed (``secure_delete``) and the file is vacuumed, so no plaintext of a
    newly encrypted row stays in free pages.
    """
    conn.execute("PRAGMA secure_delete=ON")
    rewritten = dropped = 0
    with conn:
        for table in ("entries", "feedback"):  # the feedback log is sealed too
            done, gone = _rewrite_table(conn, codec, table)
            rewritten, dropped = rewritten + done, dropped + gone
        _set_mode(conn, codec.mode, replace=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Rewritten(rewritten, dropped, codec.mode)


def _rewrite_table(
    conn: sqlite3.Connection, codec: RowCodec, table: str
) -> tuple[int, int]:
    """Rewrite the rows of ``table`` (in the caller's transaction); returns
    (rewritten, dropped)."""
    rewritten = dropped = 0
    last = -1
    while True:
        rows = conn.execute(
            f"SELECT rowid, {COLUMNS} FROM {table} WHERE rowid > ? "
            "ORDER BY rowid LIMIT 500",
            (last,),
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        for row in rows:
            try:
                shell, stored = _split(row[1:])
                entry = codec.decode_any(shell, stored, None)
            except (CorruptRow, ForeignKey):
                conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (row[0],))
                dropped += 1
                continue
            s = codec.encode(entry)
            conn.execute(
                _UPDATE.format(table=table),
                (s.query, s.answer, s.metadata, s.vector, s.sealed, s.checksum,
                 entry.entry_id),
            )  # fmt: skip
            rewritten += 1
    return rewritten, dropped


def _mode(conn: sqlite3.Connection) -> str | None:
    row = conn.execute(
        "SELECT value FROM stagecache_meta WHERE name = ?", (_MODE,)
    ).fetchone()
    return None if row is None else str(row[0])


def _set_mode(conn: sqlite3.Connection, mode: str, *, replace: bool = False) -> None:
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    with conn:
        conn.execute(
            f"{verb} INTO stagecache_meta (name, value) VALUES (?, ?)", (_MODE, mode)
        )
