"""Where the time of a confirmed enqueue on RabbitMQ goes (docs/benchmarks.md, *Where aiotq
spends its time*): ``n`` no-op tasks sent with ``delay()`` in gathers of 100, as scenario A
does, with the client's and RabbitMQ's CPU per task, for aiotq as it is and for variants that
each take one cost away.

    python -m benchmarks.amqp_enqueue [--n 10000] [--repeats 4] [--variants as-is,...]

- ``as-is``: ``delay()``, the default settings.
- ``pre-encoded``: the same publishes through the same channel, of one message encoded
  once: what is left when the client's work per task is only the publish itself.
- ``unconfirmed``: ``delay()`` on the connection's channel without publisher confirms: what
  RabbitMQ's confirms cost (for persistent messages it writes its queue index to disk
  before it confirms them).
- ``channels-4``: ``publish_channels=4``, the default before 35cf378.

The variants take turns within each repeat, so a noisy machine affects them alike.
RabbitMQ's CPU is read from /proc when it runs on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiotq import App
from aiotq.calling import prepare

from .amqp_queues import delete, parse_names, per_message, print_table, rabbitmq_cpu
from .config import AMQP_URL, BATCH

VARIANTS = ("as-is", "pre-encoded", "unconfirmed", "channels-4")


def parse_variants(text: str) -> list[str]:
    """``--variants``: comma-separated names of :data:`VARIANTS`."""
    return parse_names(text, VARIANTS, "variants")


def _pre_encoded(app: App, queue: str) -> Callable[[int], Awaitable[Any]]:
    broker: Any = app.broker  # the AMQP broker's internals: this is a measurement
    conn = broker._conn
    message = prepare(app, "bench.noop", (0,), {}, {}).outgoing.message
    properties = broker._properties(message)

    async def publish(_: int) -> None:
        publisher = await conn.publisher(conn.pick())
        await conn.publish(publisher, message.body, properties, "", queue)

    return publish


async def measure(variant: str, n: int) -> tuple[float, float, float | None]:
    """Enqueue rate, the client's and RabbitMQ's µs of CPU per task."""
    queue = f"bench-enqueue-{uuid.uuid4().hex[:8]}"
    options = {"publish_channels": 4} if variant == "channels-4" else {}
    app = App("bench", broker=AMQP_URL, backend=None, task_default_queue=queue,
              broker_transport_options=options)

    @app.task(name="bench.noop", ignore_result=True)
    async def noop(x: int) -> None:
        pass

    try:
        # Connects and declares the queue, then opens the channel the variant publishes on.
        await asyncio.gather(*(noop.delay(x) for x in range(BATCH)))
        send: Callable[[int], Awaitable[Any]] = noop.delay
        if variant == "pre-encoded":
            send = _pre_encoded(app, queue)
        elif variant == "unconfirmed":
            broker: Any = app.broker
            conn = broker._conn
            conn.pick = lambda: conn.UNCONFIRMED
        await asyncio.gather(*(send(x) for x in range(BATCH)))
        cpu = rabbitmq_cpu()
        client = time.process_time()
        started = time.perf_counter()
        for first in range(0, n, BATCH):
            await asyncio.gather(*(send(x) for x in range(first, first + BATCH)))
        rate = n / (time.perf_counter() - started)
        client_cost = (time.process_time() - client) / n * 1e6
        broker_cost = per_message(cpu, rabbitmq_cpu(), n)
    finally:
        await app.close()
        await delete(queue)
    return rate, client_cost, broker_cost


async def main(n: int, repeats: int, variants: list[str]) -> None:
    runs: dict[str, list[tuple[float, float, float | None]]] = {v: [] for v in variants}
    for repeat in range(repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for variant in order:
            runs[variant].append(await measure(variant, n))
    print(f"{n:,} tasks in gathers of {BATCH}, {repeats} runs, median (min-max)\n")
    print_table(["variant", "enqueue / s", "client µs CPU per task",
                 "RabbitMQ µs CPU per task"], runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--variants", type=parse_variants, default=list(VARIANTS),
                        help=f"comma-separated, of: {', '.join(VARIANTS)}")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.n, arguments.repeats, arguments.variants))
