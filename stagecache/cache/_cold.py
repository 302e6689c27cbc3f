"""Cold scopes: loading a scope's index on demand, unloading the least recently used.

With ``max_hot_scopes`` set, at most that many scope indexes stay in memory; the
others are saved to ``index_dir`` (``_persist``) and loaded back on their next use
(or rebuilt from the backend's vectors). A scope loaded from its files keeps them
while its index is unchanged (``ScopeState.saved``): unloading it again writes
nothing, which is how a lookup never writes an index file (a full disk cannot fail
it). The first change to a scope deletes its files. A save that fails (a full disk)
is logged and published as a ``cache.error`` event; the scope stays in memory.
"""

from __future__ import annotations

import logging

import anyio
import numpy as np

from stagecache.cache._core import CacheCore
from stagecache.cache._index import FlatIndex, ScopeIndex
from stagecache.cache._persist import delete_saved, load_index, save_index
from stagecache.cache._state import ScopeState
from stagecache.pipeline._events import CacheError as CacheErrorEvent

__all__ = ["ColdScopes"]

_log = logging.getLogger("stagecache.cache")


class ColdScopes(CacheCore):
    """Loading, unloading and saving scope indexes (see the module docstring)."""

    async def _ensure_hot(
        self, state: ScopeState, *, write: bool = True, may_save: bool | None = None
    ) -> ScopeIndex:
        """The scope's index, loading it if cold. Caller holds ``state.lock``.

        Args:
            state: the scope.
            write: the caller is about to change the index, so its saved files
                (stale from then on) are deleted. A lookup passes False: it writes
                no index file, and a scope it loaded from its files can be unloaded
                again by dropping it (``state.saved``).
            may_save: whether unloading other scopes may write their files
                (default: ``write``).
        """
        s = self._settings
        if state.index is not None:
            if write and state.saved:
                await self._unsave(state)
            self._mark_hot(state)
            return state.index
        ids = set(state.by_qkey.values())
        index: ScopeIndex | None = None
        if s.index_dir:
            index_dir = s.index_dir
            index = await anyio.to_thread.run_sync(
                lambda: load_index(
                    index_dir, state.key, self._dim, expect=ids, ef=s.hnsw_ef_search
                )
            )
        from_file = index is not None
        if index is None and self._backend.stores_vectors:
            entries = [
                e async for batch in self._backend.scan(state.key) for e in batch
            ]
            entries = [e for e in entries if e.entry_id in ids]
            vectors = self._vectors_of(entries)
            id_list = [e.entry_id for e in entries]
            index = await anyio.to_thread.run_sync(
                lambda: self._build(id_list, vectors)
            )
        if index is None:
            index = self._build([], np.empty((0, self._dim), dtype=np.float32))
        lost = ids.difference(index.ids())
        if lost:
            # Saved file gone and no vectors in the backend: these entries can no
            # longer be found; forget them rather than keep unreachable rows.
            _log.warning(
                "cache: %d entries of scope %s lost their vectors",
                len(lost),
                state.hash,
            )
            await self._backend.delete(list(lost))
            for entry_id in lost:
                self._drop_record(entry_id)
        state.index = index
        state.saved = from_file
        if s.index_dir and (write or not from_file):
            # Stale (or about to be). Unlinking needs no free space; where it fails
            # anyway a lookup goes on (a stale file is never loaded: its ids differ).
            await self._unsave(state, strict=write)
        self._mark_hot(state)
        await self._unload_excess(
            keep=state, may_save=write if may_save is None else may_save
        )
        return index

    async def _unsave(self, state: ScopeState, *, strict: bool = True) -> None:
        """Delete a scope's saved files (its index is changing or they are stale).

        ``strict=False`` (a lookup) reports a failure instead of raising it.
        """
        state.saved = False
        index_dir = self._settings.index_dir
        if not index_dir:
            return
        try:
            await anyio.to_thread.run_sync(delete_saved, index_dir, state.key)
        except OSError as exc:
            if strict:
                raise
            self._report_fault("delete_index", exc)

    async def _unload_excess(
        self, keep: ScopeState | None = None, *, may_save: bool = True
    ) -> None:
        """Unload least recently used scopes past ``max_hot_scopes``.

        With ``may_save=False`` (a lookup) nothing is written: scopes whose saved
        files are current are dropped, and so are changed flat scopes of a backend
        that keeps the vectors (a cheap rebuild on their next use); the others stay
        until the next store unloads them (by saving them).
        """
        limit = self._settings.max_hot_scopes
        if limit is None:
            return
        for key in list(self._hot):
            if len(self._hot) <= limit:
                return
            state = self._scopes.get(key)
            if state is None or state.index is None:
                self._hot.pop(key, None)
                continue
            drop = state.saved or (
                self._backend.stores_vectors and isinstance(state.index, FlatIndex)
            )
            if state is keep or not (may_save or drop):
                continue
            try:
                # Only try: a lookup may hold this lock while loading ``keep``.
                state.lock.acquire_nowait()
            except anyio.WouldBlock:
                continue
            try:
                with anyio.CancelScope(shield=True):
                    if (not may_save and not state.saved) or await self._save(state):
                        state.index = None
                        state.saved = False
                        self._hot.pop(key, None)
            finally:
                state.lock.release()

    async def _save(self, state: ScopeState) -> bool:
        """Write a scope's index to ``index_dir``; False when the write failed.

        A failed save (a full disk) is logged and published as a ``cache.error``
        event with operation ``save_index``; the scope stays in memory, so nothing
        is lost and the next unload tries again.
        """
        index, index_dir = state.index, self._settings.index_dir
        if index is None or not index_dir:
            return False
        if state.saved:
            return True
        try:
            await anyio.to_thread.run_sync(
                save_index, index_dir, state.key, index, self._dim
            )
        except OSError as exc:
            self._report_fault("save_index", exc)
            return False
        state.saved = True
        return True

    def _report_fault(self, operation: str, exc: BaseException) -> None:
        """Log a contained engine fault and publish it as a ``cache.error`` event."""
        kind = type(exc).__name__
        _log.warning(
            "cache: %s failed, the cache goes on without it: %s: %s",
            operation,
            kind,
            str(exc)[:200],
        )
        self._publish(
            CacheErrorEvent(
                operation=operation, error_type=kind, message=str(exc)[:200]
            )
        )
