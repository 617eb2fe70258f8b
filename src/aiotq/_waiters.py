"""Wake-ups that work across event loops: state shared by an app used from several loops."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


class Waiters:
    """Futures to resolve when something changes; each on the loop that created it."""

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[None]] = set()

    def new(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def notify_all(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for future in list(self._futures):
            loop = future.get_loop()
            if loop is running:
                _resolve(future)  # no self-pipe write needed on our own loop
                continue
            if loop.is_closed():
                self._futures.discard(future)
                continue
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_any(future: asyncio.Future[Any], sleep: asyncio.Future[Any] | None) -> None:
    """Wait for ``future`` or ``sleep`` (either may finish first); cancel what is left."""
    pending: set[asyncio.Future[Any]] = {future} if sleep is None else {future, sleep}
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for item in pending:
            if not item.done():
                item.cancel()
