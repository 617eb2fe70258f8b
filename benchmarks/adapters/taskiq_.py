"""taskiq on Redis (taskiq-redis ``RedisStreamBroker``) and RabbitMQ (taskiq-aio-pika),
results in Redis (``RedisAsyncResultBackend``; taskiq has no AMQP result backend).

taskiq has no per-task "ignore result": the worker of B1 runs without a result backend.
RabbitMQ queues are classic (taskiq-aio-pika defaults to quorum) to match the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from taskiq import AsyncBroker
from taskiq.api import run_receiver_task
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from ..config import CONCURRENCY, REDIS_URL
from ..harness import in_batches, tick
from .base import Adapter, Context, NotSupported


def _broker(ctx: Context) -> AsyncBroker:
    if ctx.broker == "redis":
        return RedisStreamBroker(ctx.url, queue_name=ctx.queue, consumer_group_name=ctx.queue)
    from taskiq_aio_pika import AioPikaBroker, Exchange, Queue, QueueType

    return AioPikaBroker(
        ctx.url, qos=CONCURRENCY, exchange=Exchange(name=ctx.queue),
        task_queues=[Queue(name=ctx.queue, type=QueueType.CLASSIC)],
        dead_letter_queue=Queue(name=f"{ctx.queue}.dead_letter", type=QueueType.CLASSIC),
        delay_queue=Queue(name=f"{ctx.queue}.delay", type=QueueType.CLASSIC))


class TaskiqAdapter(Adapter):
    name = "taskiq"
    polls = True  # wait_result() polls the backend, every 0.2 s by default

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.broker = _broker(ctx)
        if ctx.store:
            self.broker = self.broker.with_result_backend(
                RedisAsyncResultBackend(REDIS_URL, prefix_str=self.queue, result_ex_time=3600))

        @self.broker.task(task_name="bench.noop")
        async def noop(x: int) -> int:
            tick()
            return x

        self.noop = noop

    async def open(self) -> None:
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def send(self, x: int, *, store: bool = False) -> Any:
        return await self.noop.kiq(x)

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        if self.ctx.broker != "amqp":
            raise NotSupported("delays need taskiq's scheduler process")
        kicker = self.noop.kicker().with_labels(delay=delay)
        await in_batches(xs, kicker.kiq)

    async def call(self, x: int) -> Any:
        task = await self.noop.kiq(x)
        interval = 0.001 if self.ctx.tuned else 0.2
        result = await task.wait_result(check_interval=interval, timeout=10)
        return result.return_value

    def run_worker(self) -> None:
        async def main() -> None:
            self.broker.is_worker_process = True
            await self.broker.startup()
            await run_receiver_task(self.broker, max_async_tasks=CONCURRENCY)

        asyncio.run(main())

    def amqp_names(self) -> tuple[list[str], list[str]]:
        queues = [self.queue, f"{self.queue}.dead_letter", f"{self.queue}.delay"]
        return queues, [self.queue]


ADAPTER = TaskiqAdapter
