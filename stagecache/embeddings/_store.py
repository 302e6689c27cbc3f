"""The persistent half of the embedding cache: one SQLite file in WAL mode.

Schema::

    vectors(key TEXT PRIMARY KEY, model_id TEXT, dim INTEGER, created_at REAL,
            vector BLOB)                      -- float32, little-endian, dim values
    vector_sources(key TEXT, source TEXT, PRIMARY KEY (key, source))
                                              -- who caused the row (for purges)

The API is synchronous and thread-safe (one connection behind a lock);
:class:`~stagecache.embeddings.CachedEmbedder` calls it from worker threads, so no
SQLite call ever runs on the event loop. ``sqlite3`` errors are translated into
:class:`~stagecache.errors.EmbeddingError` here, at the boundary.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from stagecache._erase import secure_delete, truncate_wal
from stagecache.errors import EmbeddingError
from stagecache.types import Vectors

__all__ = ["VectorStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    key TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    created_at REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vector_sources (
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (key, source)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vector_sources_by_source ON vector_sources (source);
"""

# SQLite's default limit of host parameters per statement is 32766 (>= 3.32); stay
# far below it.
_CHUNK = 500


class VectorStore:
    """Vectors by key in a SQLite file, with the sources that caused each row.

    Args:
        path: the database file (created with its parent folders).
    """

    __slots__ = ("_conn", "_lock", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._open()
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise EmbeddingError(
                    f"embedding cache {self.path}: {what} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint, fast
        conn.execute("PRAGMA busy_timeout=5000")
        # Purged rows are zeroed, not left in free pages (upstream's default).
        secure_delete(conn, self.path)
        conn.executescript(_SCHEMA)
        return conn

    def open(self) -> None:
        """Open (and create) the database now rather than on first use."""
        self._run("open", lambda conn: None)

    def get_many(
        self, keys: Sequence[str], model_id: str, dim: int | None
    ) -> dict[str, Vectors]:
        """The stored vectors of ``keys`` that match ``model_id`` (and ``dim``)."""

        def fn(conn: sqlite3.Connection) -> dict[str, Vectors]:
            found: dict[str, Vectors] = {}
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, dim, vector FROM vectors WHERE key IN ({marks}) "
                    "AND model_id = ?",
                    (*chunk, model_id),
                )
                for key, row_dim, blob in rows:
                    if dim is not None and row_dim != dim:
                        continue
                    found[key] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            return found

        return self._run("read", fn)

    def put_many(
        self,
        rows: Iterable[tuple[str, Vectors]],
        model_id: str,
        dim: int,
        sources: Sequence[str] = (),
    ) -> None:
        """Store vectors (replacing rows with the same key) and tie them to sources."""
        now = time.time()
        data = [
            (key, model_id, dim, now, np.asarray(vec, dtype="<f4").tobytes())
            for key, vec in rows
        ]

        def fn(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?)", data
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO vector_sources VALUES (?, ?)",
                    [(row[0], source) for row in data for source in sources],
                )

        self._run("write", fn)

    def add_sources(self, keys: Sequence[str], sources: Sequence[str]) -> None:
        """Tie existing rows to more sources."""

        def fn(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT OR IGNORE INTO vector_sources VALUES (?, ?)",
                    [(key, source) for key in keys for source in sources],
                )

        self._run("write", fn)

    def purge_source(self, source: str) -> list[str]:
        """Delete every row tied to ``source``; returns the deleted keys."""

        def fn(conn: sqlite3.Connection) -> list[str]:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                keys = [
                    k
                    for (k,) in conn.execute(
                        "SELECT key FROM vector_sources WHERE source = ?", (source,)
                    )
                ]
                for i in range(0, len(keys), _CHUNK):
                    chunk = keys[i : i + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    conn.execute(f"DELETE FROM vectors WHERE key IN ({marks})", chunk)
                    conn.execute(
                        f"DELETE FROM vector_sources WHERE key IN ({marks})",
                        chunk,
                    )
            if keys:
                # The WAL still holds the rows' pages as they were: checkpoint
                # and truncate it, so no byte of them is left on disk.
                truncate_wal(conn, self.path)
            return keys

        return self._run("purge", fn)

    def count(self) -> int:
        """The number of stored vectors."""
        return self._run(
            "count",
            lambda conn: int(
                conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            ),
        )

    def close(self) -> None:
        """Close the connection (a later call reopens it)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
