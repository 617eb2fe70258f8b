"""Group commit: concurrent callers share one flush (a Redis pipeline, a SQLite
transaction) without knowing of each other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs every item submitted while a flush is in flight in the next flush (group commit).

    ``flush(items)`` returns one result per item, an exception for an item that failed; if
    it raises, every item of that flush fails with its error.

    With ``eager``, an item submitted while nothing is in flight is flushed at once by its
    caller, before the caller's task yields, instead of one event-loop turn later by the
    flushing task: the lone item's latency matters more than gathering a few more.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[R | Exception]]], *,
                 eager: bool = False) -> None:
        self._flush_items = flush
        self._eager = eager
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._leading = False

    async def submit(self, item: T) -> R:
        if self._eager and not self._leading and not self._busy():
            return await self._lead(item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._leading and not self._busy():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    def _busy(self) -> bool:
        return self._flusher is not None and not self._flusher.done()

    async def _lead(self, item: T) -> R:
        """Flush ``item`` alone, in the caller's task; what came meanwhile is flushed next."""
        self._leading = True
        try:
            [result] = await self._flush_items([item])
        finally:
            self._leading = False
            if self._queue:
                self._flusher = asyncio.create_task(self._flush())
        if isinstance(result, Exception):
            raise result
        return result

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._flush_items([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._queue:
                    future.cancel()
                raise
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
