"""streaq on Redis streams; ``enqueue_many`` is its batch API (one pipeline). Results are
awaited by subscription, so nothing polls."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from streaq import Worker

from ..config import CONCURRENCY, REDIS_URL
from ..harness import anoop, chunks, in_batches
from .base import Adapter, Context


class StreaqAdapter(Adapter):
    name = "streaq"
    batch_api = True  # Worker.enqueue_many: one pipeline per 100

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.worker: Worker[Any] = Worker(redis_url=REDIS_URL, queue_name=self.queue,
                                          concurrency=CONCURRENCY)

        # ttl=0: the result is not stored.
        self.noop = self.worker.task(name="noop", ttl=0)(anoop)
        self.noop_stored = self.worker.task(name="noop_stored")(anoop)

    async def open(self) -> None:
        await self.worker.__aenter__()

    async def close(self) -> None:
        await self.worker.__aexit__(None, None, None)

    async def send(self, x: int, *, store: bool = False) -> Any:
        return await (self.noop_stored if store else self.noop).enqueue(x)

    async def send_many(self, xs: Sequence[int], *, store: bool) -> None:
        task = self.noop_stored if store else self.noop
        for batch in chunks(xs):
            await self.worker.enqueue_many([task.enqueue(x) for x in batch])

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        later = dt.timedelta(seconds=delay)
        await in_batches(xs, lambda x: self.noop.enqueue(x).start(delay=later))

    async def call(self, x: int) -> Any:
        task = await self.noop_stored.enqueue(x)
        return (await task.result(timeout=10)).result

    def run_worker(self) -> None:
        self.worker.run_sync()


ADAPTER = StreaqAdapter
