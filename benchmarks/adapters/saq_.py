"""saq on Redis. Results are job records (``ttl=-1`` deletes them at once); the worker
blocks on the queue.

``Queue.apply`` (its one-call round trip) subscribes only after enqueueing, so a fast job's
notice is missed and it re-checks after 1 s (``Job.refresh(until_complete=...)`` has the
same race, and can miss the notice for good); tuned, the round trip is ``enqueue`` and then
``Job.refresh()`` every 1 ms until the job is done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from saq import Queue, Worker
from saq.job import TERMINAL_STATUSES

from ..config import CONCURRENCY, REDIS_URL
from ..harness import in_batches, tick
from .base import Adapter, Context


async def noop(ctx: dict[str, Any], *, x: int) -> int:
    tick()
    return x


class SaqAdapter(Adapter):
    name = "saq"
    polls = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.saq = Queue.from_url(REDIS_URL, name=self.queue)

    async def open(self) -> None:
        await self.saq.connect()

    async def close(self) -> None:
        await self.saq.disconnect()

    async def send(self, x: int, *, store: bool = False) -> Any:
        return await self.saq.enqueue("noop", x=x, ttl=600 if store else -1)

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        when = int(time.time() + delay)
        await in_batches(xs, lambda x: self.saq.enqueue("noop", x=x, ttl=-1, scheduled=when))

    async def call(self, x: int) -> Any:
        if not self.ctx.tuned:
            return await self.saq.apply("noop", timeout=10, x=x)
        job = await self.saq.enqueue("noop", x=x, ttl=600)
        assert job is not None
        async with asyncio.timeout(10):
            while job.status not in TERMINAL_STATUSES:
                await asyncio.sleep(0.001)
                await job.refresh()
        return job.result

    def run_worker(self) -> None:
        async def main() -> None:
            await self.saq.connect()
            await Worker(self.saq, functions=[noop], concurrency=CONCURRENCY).start()

        asyncio.run(main())


ADAPTER = SaqAdapter
