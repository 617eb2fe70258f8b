"""Celery 5 on Redis (results in Redis) and RabbitMQ (results over ``rpc://``).

Celery's calls are blocking, so ``send`` simply calls ``delay()`` (a gather has nothing to
overlap); ``group`` is its batch API (one producer, one connection for the batch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from celery import Celery, group

from ..config import AMQP_CONFIRMS, CONCURRENCY, REDIS_URL
from ..harness import chunks, noop
from .base import Adapter, Context

#: For no-op tasks in one worker process the solo pool drained ~20% faster than threads
#: with concurrency 100 (1,700 vs 1,380 tasks/s here); prefork would add child processes.
#: Override to compare.
POOL = os.environ.get("BENCH_CELERY_POOL", "solo")


class CeleryAdapter(Adapter):
    name = "celery"
    pool = f"{POOL} pool" if POOL == "solo" else f"{POOL} pool, concurrency {CONCURRENCY}"
    polls = True
    batch_api = True  # group(...).apply_async(): one producer for the batch

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        backend = REDIS_URL if ctx.broker == "redis" else "rpc://"
        self.app = Celery("bench", broker=ctx.url, backend=backend)
        self.app.conf.update(task_default_queue=self.queue, worker_enable_remote_control=False,
                             worker_send_task_events=False, broker_connection_retry=False,
                             broker_connection_retry_on_startup=True)
        if ctx.broker == "amqp":
            self.app.conf.broker_transport_options = {"confirm_publish": AMQP_CONFIRMS}

        self.noop = self.app.task(name="bench.noop", ignore_result=True)(noop)
        self.noop_stored = self.app.task(name="bench.noop_stored")(noop)

    async def close(self) -> None:
        self.app.close()

    async def send(self, x: int, *, store: bool = False) -> Any:
        return (self.noop_stored if store else self.noop).delay(x)

    async def send_many(self, xs: Sequence[int], *, store: bool) -> None:
        task = self.noop_stored if store else self.noop
        for batch in chunks(xs):
            group(task.s(x) for x in batch).apply_async()

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        for batch in chunks(xs):
            group(self.noop.s(x) for x in batch).apply_async(countdown=delay)

    async def call(self, x: int) -> Any:
        interval = 0.001 if self.ctx.tuned else 0.5  # 0.5 s is get()'s default
        return self.noop_stored.delay(x).get(timeout=10, interval=interval)

    def run_worker(self) -> None:
        self.app.worker_main(["worker", f"--pool={POOL}", f"--concurrency={CONCURRENCY}",
                              "-Q", self.queue, "--without-mingle", "--without-gossip",
                              "--without-heartbeat", "--loglevel=WARNING"])

    def redis_patterns(self) -> list[str]:
        return [*super().redis_patterns(), "celery-task-meta-*", "unacked*"]

    def amqp_names(self) -> tuple[list[str], list[str]]:
        return [self.queue], [self.queue]


ADAPTER = CeleryAdapter
