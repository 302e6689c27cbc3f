"""Erasure in SQLite files: what ``purge_user`` needs so no byte is left behind.

SQLite's upstream default (``secure_delete=0``) leaves deleted rows in the file's
free space, and in WAL mode the pages as they were before a delete stay in the WAL
until a checkpoint overwrites or truncates it. Both SQLite stores of the library
(the cache's ``cache.db`` and the embedding cache) turn ``secure_delete`` on for
every connection and truncate their WAL after a purge, with these two helpers.
"""

from __future__ import annotations

import logging
import os
import sqlite3

__all__ = ["secure_delete", "truncate_wal"]

_log = logging.getLogger("stagecache.cache")


def secure_delete(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> None:
    """Turn ``secure_delete`` on for ``conn``: deleted content is overwritten.

    Freed cells and pages (the rows, their overflow pages and index entries) are
    zeroed by SQLite itself, whatever the build's default.
    """
    row = conn.execute("PRAGMA secure_delete=ON").fetchone()
    if row is None or int(row[0]) != 1:
        _log.warning(
            "%s: this SQLite build refuses secure_delete (%r); purged rows may stay "
            "in the file's free pages until they are reused",
            path,
            row,
        )


def truncate_wal(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> bool:
    """``wal_checkpoint(TRUNCATE)``: the WAL's old page images go; returns success.

    Call it outside a transaction. A reader in another process can block the
    checkpoint: the old pages then stay in the WAL until a later checkpoint, and
    a warning says so.
    """
    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if row is not None and int(row[0]) != 0:
        _log.warning(
            "%s: the WAL could not be truncated after a purge (another connection "
            "is reading it); the purged rows' old pages stay in it until the next "
            "checkpoint",
            path,
        )
        return False
    return True
