"""Saving scope indexes to ``index_dir`` and loading them back.

A saved scope is two files named by the sha256 of its scope key: ``<name>.json``
(manifest: kind, dim, the full scope key, the ids and the sha256 of the data file)
and ``<name>.npy`` (flat matrix) or ``<name>.hnsw`` (hnswlib graph). The checksum
is verified before a file is loaded: a damaged file could otherwise answer with
another entry's vector (flat) or crash the process inside hnswlib (graph). Files
are written to a temporary name and renamed, manifest last, so a crash never leaves
a manifest pointing at a half file. A manifest that does not match what the caller
expects (scope key, dim, the set of ids, the checksum) is ignored, and the engine
rebuilds from the backend instead.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import hnswlib  # untyped: pyproject sets ignore_missing_imports for it
import msgspec
import numpy as np

from stagecache.cache._index import FlatIndex, HnswIndex, ScopeIndex

__all__ = [
    "delete_saved",
    "delete_saved_of_user",
    "file_base",
    "load_index",
    "save_index",
]

_PREFIX = "sc-"


class _Manifest(msgspec.Struct):
    kind: str
    dim: int
    key: str
    ids: list[str]
    labels: list[int] = []
    sha256: str = ""


def file_base(index_dir: str, scope_key: str) -> Path:
    """The path, without suffix, of a scope's saved files."""
    name = hashlib.sha256(scope_key.encode()).hexdigest()[:32]
    return Path(index_dir) / f"{_PREFIX}{name}"


def save_index(index_dir: str, scope_key: str, index: ScopeIndex, dim: int) -> None:
    """Write ``index`` for ``scope_key`` (blocking: call from a worker thread).

    A failed write (a full disk: ``ENOSPC``, a file size limit: ``EFBIG``) raises
    the ``OSError`` and leaves no temporary file behind, so a disk that is full
    once is not made fuller by every retry.
    """
    base = file_base(index_dir, scope_key)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmps = [base.with_suffix(s) for s in (".npy.tmp", ".hnsw.tmp", ".json.tmp")]
    try:
        manifest = _write_data(base, scope_key, index, dim)
        tmp = base.with_suffix(".json.tmp")
        tmp.write_bytes(msgspec.json.encode(manifest))
        os.replace(tmp, base.with_suffix(".json"))
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise


def _write_data(base: Path, scope_key: str, index: ScopeIndex, dim: int) -> _Manifest:
    """Write the data file (temporary name, then renamed); returns its manifest."""
    if isinstance(index, FlatIndex):
        ids, vectors = index.export()
        tmp = base.with_suffix(".npy.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, vectors)
        digest = _sha256(tmp)
        os.replace(tmp, base.with_suffix(".npy"))
        return _Manifest(kind="flat", dim=dim, key=scope_key, ids=ids, sha256=digest)
    id_of = index.labels()
    tmp = base.with_suffix(".hnsw.tmp")
    raw: Any = index.raw
    raw.save_index(str(tmp))
    _check_graph(tmp, dim, int(raw.element_count))
    digest = _sha256(tmp)
    os.replace(tmp, base.with_suffix(".hnsw"))
    return _Manifest(
        kind="hnsw",
        dim=dim,
        key=scope_key,
        ids=list(id_of.values()),
        labels=list(id_of),
        sha256=digest,
    )


def _check_graph(path: Path, dim: int, count: int) -> None:
    """Read a just-written hnswlib graph back.

    hnswlib writes through a C++ stream that ignores write errors: on a full disk
    it returns normally and leaves a truncated file, which a checksum taken now
    would bless. Its loader checks the file's length against its header.

    Raises:
        OSError: the file is incomplete.
    """
    probe = hnswlib.Index(space="ip", dim=dim)
    try:
        probe.load_index(str(path))
    except (RuntimeError, MemoryError, ValueError) as exc:
        raise OSError(
            errno.EIO, f"{path}: the saved hnswlib graph is incomplete ({exc})"
        ) from exc
    if int(probe.element_count) != count:
        raise OSError(errno.EIO, f"{path}: the saved hnswlib graph is incomplete")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_index(
    index_dir: str, scope_key: str, dim: int, *, expect: set[str] | None, ef: int
) -> ScopeIndex | None:
    """Load a saved index, or None when absent, unreadable or not matching.

    Args:
        index_dir: the directory of saved indexes.
        scope_key: the scope the files must belong to.
        dim: the vector dimension the files must have.
        expect: when given, the exact set of ids the index must hold.
        ef: hnswlib query beam width for a loaded graph.
    """
    base = file_base(index_dir, scope_key)
    try:
        manifest = msgspec.json.decode(
            base.with_suffix(".json").read_bytes(), type=_Manifest
        )
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    if manifest.key != scope_key or manifest.dim != dim:
        return None
    if expect is not None and set(manifest.ids) != expect:
        return None
    data = base.with_suffix(".npy" if manifest.kind == "flat" else ".hnsw")
    try:
        if not manifest.sha256 or _sha256(data) != manifest.sha256:
            return None  # damaged or foreign: rebuild from the backend
        if manifest.kind == "flat":
            vectors: Any = np.load(base.with_suffix(".npy"), allow_pickle=False)
            if vectors.shape != (len(manifest.ids), dim) or vectors.dtype != np.float32:
                return None
            flat = FlatIndex(dim, capacity=len(manifest.ids))
            if manifest.ids:
                flat.add(manifest.ids, vectors)
            return flat
        if manifest.kind == "hnsw" and len(manifest.labels) == len(manifest.ids):
            raw = hnswlib.Index(space="ip", dim=dim)
            raw.load_index(str(base.with_suffix(".hnsw")))
            return HnswIndex.restore(
                dim, raw, dict(zip(manifest.labels, manifest.ids, strict=True)), ef=ef
            )
    except (OSError, ValueError, RuntimeError):
        # A truncated or foreign file: the caller rebuilds from the backend.
        return None
    return None


def delete_saved(index_dir: str, scope_key: str | None = None) -> int:
    """Delete the saved files of one scope (or of all); returns files removed."""
    directory = Path(index_dir)
    if scope_key is not None:
        base = file_base(index_dir, scope_key)
        paths = [base.with_suffix(s) for s in (".json", ".npy", ".hnsw")]
    elif directory.is_dir():
        paths = [p for p in directory.iterdir() if p.name.startswith(_PREFIX)]
    else:
        paths = []
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def delete_saved_of_user(
    index_dir: str,
    user_id: str,
    keep: frozenset[str],
    *,
    tenant: str | None = None,
    all_tenants: bool = False,
) -> int:
    """Delete the saved files of every scope of ``user_id`` not in ``keep``.

    For ``purge_user``: files no entry points to any more (their rows purged by
    another process, or expired, while this one was down) are never loaded again,
    and hold the user's vectors and scope key. A scope of the user is one whose
    key (``[mode, tenant, user, session]``) has the user id third and ``tenant``
    second (any tenant with ``all_tenants``). Returns how many scopes' files were
    deleted.
    """
    deleted = 0
    for path in Path(index_dir).glob(f"{_PREFIX}*.json"):
        try:
            key = msgspec.json.decode(path.read_bytes(), type=_Manifest).key
            parts = msgspec.json.decode(key)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            continue
        if key in keep or not isinstance(parts, list) or len(parts) < 3:
            continue
        if parts[2] == user_id and (all_tenants or parts[1] == tenant):
            deleted += delete_saved(index_dir, key) > 0
    return deleted
