"""arq on Redis. Its worker polls the queue (``poll_delay``, 0.5 s by default) and
``Job.result()`` polls the result (``poll_delay``, 0.5 s): tuned, both are 1 ms."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import ResultNotFound
from arq.worker import Worker, func

from ..config import CONCURRENCY, REDIS_URL
from ..harness import in_batches, tick
from .base import Adapter, Context


async def noop(ctx: dict[str, Any], x: int) -> int:
    tick()
    return x


class ArqAdapter(Adapter):
    name = "arq"
    polls = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.settings = RedisSettings.from_dsn(REDIS_URL)
        self.poll = 0.001 if ctx.tuned else 0.5
        self.pool: ArqRedis | None = None

    async def open(self) -> None:
        self.pool = await create_pool(self.settings, default_queue_name=self.queue)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()

    async def send(self, x: int, *, store: bool = False) -> Any:
        assert self.pool is not None
        return await self.pool.enqueue_job("noop_stored" if store else "noop", x)

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        assert self.pool is not None
        pool = self.pool
        await in_batches(xs, lambda x: pool.enqueue_job("noop", x, _defer_by=delay))

    async def call(self, x: int) -> Any:
        job = await self.send(x, store=True)
        # Job.status() reads three keys one by one; at 1 ms polls it can see none of them
        # while the worker moves the job to its result, and then raises: look again.
        for _ in range(100):
            try:
                return await job.result(timeout=10, poll_delay=self.poll)
            except ResultNotFound:
                await asyncio.sleep(self.poll)
        raise ResultNotFound(job.job_id)

    def run_worker(self) -> None:
        async def main() -> None:
            worker = Worker(
                functions=[func(noop, name="noop", keep_result=0),
                           func(noop, name="noop_stored")],
                redis_settings=self.settings, queue_name=self.queue, max_jobs=CONCURRENCY,
                poll_delay=self.poll, handle_signals=False)
            await worker.async_run()

        asyncio.run(main())

    def redis_patterns(self) -> list[str]:
        return [*super().redis_patterns(), "arq:*"]


ADAPTER = ArqAdapter
