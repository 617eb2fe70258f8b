"""aiotq on Redis (results in Redis), RabbitMQ (results over ``rpc://``) and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiotq import App, Worker, group

from ..amqp_queues import V2_LAZY
from ..config import CONCURRENCY, REDIS_URL
from ..harness import anoop, chunks, in_batches
from .base import Adapter, Context, EnqueueMode


class AiotqAdapter(Adapter):
    name = "aiotq"
    batch_api = True  # group(...).apply_async(): one publish_many per 100
    #: Result backend by broker; the broker's own URL where none is named.
    backends: ClassVar[Mapping[str, str]] = {"redis": REDIS_URL, "amqp": "rpc://"}
    #: broker_transport_options beyond the benchmark's own key prefix.
    transport_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        backend = self.backends.get(ctx.broker, ctx.url)
        self.app = App("bench", broker=ctx.url, backend=backend,
                       task_default_queue=self.queue,
                       broker_transport_options={"key_prefix": self.queue,
                                                 **self.transport_options})

        self.noop = self.app.task(name="bench.noop", ignore_result=True)(anoop)
        self.noop_stored = self.app.task(name="bench.noop_stored")(anoop)

    async def close(self) -> None:
        await self.app.close()

    async def send(self, x: int, *, store: bool = False) -> Any:
        return await (self.noop_stored if store else self.noop).delay(x)

    def enqueue_modes(self) -> dict[str, EnqueueMode]:
        return {**super().enqueue_modes(), "producer": self._with_producer}

    async def _with_producer(self, xs: Sequence[int]) -> None:
        async with self.app.producer_or_acquire() as producer:
            await in_batches(xs, lambda x: self.noop.apply_async((x,), producer=producer))

    async def send_many(self, xs: Sequence[int], *, store: bool) -> None:
        task = self.noop_stored if store else self.noop
        for batch in chunks(xs):
            await group(task.s(x) for x in batch).apply_async()

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        for batch in chunks(xs):
            await group(self.noop.s(x) for x in batch).apply_async(countdown=delay)

    async def call(self, x: int) -> Any:
        result = await self.noop_stored.delay(x)
        return await result.get(timeout=10)

    def run_worker(self) -> None:
        self.run(Worker(self.app, [self.queue], concurrency=CONCURRENCY).run())

    def redis_patterns(self) -> list[str]:
        # Result keys carry no queue name; this database is the benchmarks' own.
        return [*super().redis_patterns(), "celery-task-meta-*", "aiotq:*"]

    def amqp_names(self) -> tuple[list[str], list[str]]:
        # The dead-letter queue and the delay queues (TTL levels of 2**k s) of far ETAs.
        delays = [f"{self.queue}.delay.{2 ** level}s" for level in range(23)]
        return [self.queue, f"{self.queue}.dead", *delays], []


class AiotqRedisResultsAdapter(AiotqAdapter):
    """aiotq on RabbitMQ with its results in Redis: what dramatiq's RabbitMQ numbers use
    (it has no AMQP result backend), so the two compare like for like."""

    name = "aiotq-redis-results"
    backends: ClassVar[Mapping[str, str]] = {"amqp": REDIS_URL}


class AiotqV2LazyAdapter(AiotqAdapter):
    """aiotq on RabbitMQ task queues of version 2 in lazy mode (its default before 3.12 until
    a54ec7d): on RabbitMQ 3.10 they confirm an enqueue faster than the default version 1
    lazy queues but hold each delivery back, and this row shows both sides in every run."""

    name = "aiotq-v2-lazy"
    transport_options: ClassVar[Mapping[str, Any]] = {"queue_arguments": V2_LAZY}


ADAPTER = AiotqAdapter
