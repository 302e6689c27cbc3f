"""A private event loop on a daemon thread, for sync entry points of async code.

LangChain calls a cache through sync ``lookup``/``update`` as well as async
``alookup``/``aupdate``, from threads and loops stagecache does not control. A
pipeline's parts (the embedder's micro-batcher, locks, connection pools) belong to
the loop they were opened on, so every pipeline operation of an integration runs
on this one loop, whichever side it is called from.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running on its own daemon thread, started on first use."""

    __slots__ = ("_lock", "_loop", "_name", "_thread")

    def __init__(self, name: str = "stagecache-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=self._name, daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and block until it is done.

        Raises:
            RuntimeError: called from the loop's own thread (it would deadlock).
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync stagecache call was made on its own loop thread")
        return self.submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from any other loop."""
        if threading.current_thread() is self._thread:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=10)
            loop.close()
