"""Vector indexes of one scope: an exact flat matrix, promoted to hnswlib when big.

An empty hnswlib index costs about 2.5 MiB (it allocates 65,536 label locks), so
10,000 small scopes with one hnswlib index each would need about 25 GiB. A scope
therefore starts as a :class:`FlatIndex`: a float32 matrix searched exactly with one
matrix-vector product, which is also faster than hnswlib for a few thousand rows.
Past ``flat_max_entries`` the engine rebuilds the scope as an :class:`HnswIndex`
(space ``ip``; rows are L2-normalised, so inner product is cosine).

Both classes share one small interface (``add``, ``remove``, ``search``,
``export``) keyed by entry id. Neither is thread-safe: the engine serialises the
operations on one scope with that scope's lock.
"""

from __future__ import annotations

from typing import Literal

import hnswlib  # untyped: pyproject sets ignore_missing_imports for it
import numpy as np
from numpy.typing import NDArray

__all__ = ["FlatIndex", "HnswIndex", "ScopeIndex", "build_index"]

Matrix = NDArray[np.float32]
_MIN_ROWS = 8


class FlatIndex:
    """Exact inner-product search over a float32 matrix grown by 1.5x.

    Deleting a row moves the last row into its place, so the live rows are always
    ``[:n]`` and a search never scans holes.
    """

    __slots__ = ("_dim", "_ids", "_mat")
    kind: Literal["flat"] = "flat"

    def __init__(self, dim: int, capacity: int = 0) -> None:
        self._dim = dim
        self._mat: Matrix = np.empty((capacity, dim), dtype=np.float32)
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        """Bytes held by the matrix (including growth slack)."""
        return int(self._mat.nbytes)

    def add(self, ids: list[str], vectors: Matrix) -> None:
        """Append rows; ``vectors`` is (len(ids), dim) float32, L2-normalised."""
        n, m = len(self._ids), len(ids)
        if n + m > self._mat.shape[0]:
            # 1.5x keeps the slack small: 10,000 scopes of 10 rows hold 12 rows each.
            capacity = max(_MIN_ROWS, n + m, self._mat.shape[0] * 3 // 2)
            grown = np.empty((capacity, self._dim), dtype=np.float32)
            grown[:n] = self._mat[:n]
            self._mat = grown
        self._mat[n : n + m] = vectors
        self._ids.extend(ids)

    def remove(self, entry_id: str) -> bool:
        """Remove one row by id; returns whether it was there."""
        try:
            row = self._ids.index(entry_id)  # O(n), n <= flat_max_entries: ~10 us
        except ValueError:
            return False
        last = len(self._ids) - 1
        if row != last:
            self._mat[row] = self._mat[last]
            self._ids[row] = self._ids[last]
        self._ids.pop()
        if last < self._mat.shape[0] // 4 and self._mat.shape[0] > _MIN_ROWS:
            # Give memory back after large deletions.
            self._mat = self._mat[: max(_MIN_ROWS, last * 2)].copy()
        return True

    def search(self, vector: Matrix, k: int) -> list[tuple[str, float]]:
        """The ``k`` most similar rows, best first, as (entry id, cosine)."""
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        # einsum, not BLAS: a multi-threaded gemv wakes BLAS threads per query,
        # which costs 10-50x the arithmetic on a busy 2-core machine.
        sims = np.einsum("ij,j->i", self._mat[:n], vector)
        if n > k:
            top = np.argpartition(-sims, k - 1)[:k]
            order = top[np.argsort(-sims[top], kind="stable")]
        else:
            order = np.argsort(-sims, kind="stable")
        ids = self._ids
        return [(ids[i], float(sims[i])) for i in order]

    def ids(self) -> list[str]:
        """The live entry ids."""
        return list(self._ids)

    def export(self) -> tuple[list[str], Matrix]:
        """A copy of the live ids and vectors (for promotion and saving)."""
        return list(self._ids), self._mat[: len(self._ids)].copy()


class HnswIndex:
    """An hnswlib graph (space ``ip``) with entry-id labels.

    Removal is ``mark_deleted``: the vector stays in the graph's memory until
    :meth:`export` feeds a rebuild (the engine compacts when deleted rows outnumber
    live ones, and after a purge, so purged vectors do not linger).
    """

    __slots__ = ("_dim", "_ef", "_id_of", "_index", "_label_of", "_next", "deleted")
    kind: Literal["hnsw"] = "hnsw"

    def __init__(
        self,
        dim: int,
        capacity: int,
        *,
        m: int = 16,
        ef_construction: int = 200,
        ef: int = 128,
    ) -> None:
        self._dim = dim
        self._ef = ef
        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=max(capacity, 1024), M=m, ef_construction=ef_construction
        )
        self._index.set_ef(ef)
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next = 0
        self.deleted = 0

    def __len__(self) -> int:
        return len(self._label_of)

    @property
    def nbytes(self) -> int:
        """Approximate bytes of the graph: vectors plus links, at capacity."""
        per = self._dim * 4 + int(self._index.M) * 2 * 4 + 16
        return int(self._index.get_max_elements()) * per

    def add(self, ids: list[str], vectors: Matrix, *, threads: int = 1) -> None:
        """Add rows; grows the graph by 1.5x with ``resize_index`` when full."""
        needed = self._next + len(ids)
        capacity = int(self._index.get_max_elements())
        if needed > capacity:
            self._index.resize_index(max(needed, capacity * 3 // 2))
        labels = np.arange(self._next, needed, dtype=np.int64)
        self._index.add_items(vectors, labels, num_threads=threads)
        for entry_id, label in zip(ids, labels.tolist(), strict=True):
            self._label_of[entry_id] = label
            self._id_of[label] = entry_id
        self._next = needed

    def remove(self, entry_id: str) -> bool:
        """Mark one entry deleted; returns whether it was there."""
        label = self._label_of.pop(entry_id, None)
        if label is None:
            return False
        del self._id_of[label]
        self._index.mark_deleted(label)
        self.deleted += 1
        return True

    def search(self, vector: Matrix, k: int) -> list[tuple[str, float]]:
        """The ``k`` approximate nearest rows, best first, as (entry id, cosine)."""
        k = min(k, len(self._label_of))
        if k <= 0:
            return []
        if k > self._ef:
            self._index.set_ef(k)
        try:
            labels, dists = self._index.knn_query(vector, k=k, num_threads=1)
        finally:
            if k > self._ef:
                self._index.set_ef(self._ef)
        id_of = self._id_of
        return [
            (id_of[label], 1.0 - float(dist))
            for label, dist in zip(labels[0].tolist(), dists[0].tolist(), strict=True)
            if label in id_of
        ]

    def ids(self) -> list[str]:
        """The live entry ids."""
        return list(self._label_of)

    def export(self) -> tuple[list[str], Matrix]:
        """The live ids and their vectors."""
        ids = list(self._label_of)
        if not ids:
            return [], np.empty((0, self._dim), dtype=np.float32)
        labels = [self._label_of[i] for i in ids]
        vectors = np.asarray(self._index.get_items(labels), dtype=np.float32)
        return ids, vectors

    @property
    def raw(self) -> object:
        """The underlying ``hnswlib.Index`` (for saving)."""
        return self._index

    def labels(self) -> dict[int, str]:
        """Label -> entry id of the live rows (for saving)."""
        return dict(self._id_of)

    @classmethod
    def restore(
        cls, dim: int, raw: object, id_of: dict[int, str], *, ef: int
    ) -> HnswIndex:
        """Wrap a loaded ``hnswlib.Index`` whose live labels are ``id_of``."""
        self = cls.__new__(cls)
        self._dim = dim
        self._ef = ef
        self._index = raw
        self._index.set_ef(ef)
        self._id_of = dict(id_of)
        self._label_of = {v: k for k, v in id_of.items()}
        self._next = int(self._index.element_count)
        self.deleted = self._next - len(id_of)
        return self


ScopeIndex = FlatIndex | HnswIndex


def build_index(
    dim: int,
    ids: list[str],
    vectors: Matrix,
    *,
    flat_max: int,
    m: int = 16,
    ef_construction: int = 200,
    ef: int = 128,
    threads: int = 1,
) -> ScopeIndex:
    """A fresh index holding ``ids``/``vectors``: flat up to ``flat_max`` rows."""
    if len(ids) <= flat_max:
        flat = FlatIndex(dim, capacity=len(ids))
        if ids:
            flat.add(ids, vectors)
        return flat
    graph = HnswIndex(
        dim, capacity=len(ids) * 3 // 2, m=m, ef_construction=ef_construction, ef=ef
    )
    graph.add(ids, vectors, threads=threads)
    return graph
