"""dramatiq on Redis and RabbitMQ (results in Redis, its Results middleware).

Its calls are blocking (``send()``), so a gather has nothing to overlap. The worker runs
in-process (``dramatiq.Worker``), one process, a thread pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from ..config import AMQP_CONFIRMS, REDIS_URL
from ..harness import noop
from .base import Adapter, Context

#: Threads of the one worker process: 100 drained no-op tasks about twice as fast as
#: dramatiq's default of 8 here (4,500 vs 2,100 tasks/s on Redis). Override to compare.
THREADS = int(os.environ.get("BENCH_DRAMATIQ_THREADS", "100"))


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    pool = f"threads, {THREADS} worker threads"
    polls = True  # an idle consumer wakes every worker_timeout (1 s by default)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        if ctx.broker == "redis":
            self.broker: dramatiq.Broker = RedisBroker(url=ctx.url, namespace=self.queue)
        else:
            self.broker = RabbitmqBroker(url=ctx.url, confirm_delivery=AMQP_CONFIRMS)
        self.backend = RedisBackend(url=REDIS_URL, namespace=self.queue,
                                    use_namespace_prefix_keys=True)
        self.broker.add_middleware(Results(backend=self.backend))
        self.noop = dramatiq.actor(noop, actor_name="noop", queue_name=self.queue,
                                   broker=self.broker)
        self.noop_stored = dramatiq.actor(noop, actor_name="noop_stored",
                                          queue_name=self.queue, broker=self.broker,
                                          store_results=True)

    async def close(self) -> None:
        self.broker.close()

    async def send(self, x: int, *, store: bool = False) -> Any:
        return (self.noop_stored if store else self.noop).send(x)

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        for x in xs:
            self.noop.send_with_options(args=(x,), delay=int(delay * 1000))

    async def call(self, x: int) -> Any:
        message = self.noop_stored.send(x)
        return message.get_result(backend=self.backend, block=True, timeout=10_000)

    def run_worker(self) -> None:
        timeout = 1 if self.ctx.tuned else 1000  # ms; 1000 is dramatiq's default
        worker = dramatiq.Worker(self.broker, worker_threads=THREADS, worker_timeout=timeout)
        worker.start()
        threading.Event().wait()  # until the driver kills the process

    def amqp_names(self) -> tuple[list[str], list[str]]:
        return [self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"], []


ADAPTER = DramatiqAdapter
