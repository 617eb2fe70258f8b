"""What RabbitMQ's queue arguments cost aiotq: enqueue and drain rates on queues declared
with each combination of ``max_priority`` and ``queue_arguments`` (docs/brokers/amqp.md,
*Queue arguments*).

    python -m benchmarks.amqp_queues [--n 20000] [--repeats 3] [--kinds plain,...]

Each run publishes ``n`` no-op tasks with ``delay()`` in gathers of 100 (publisher confirms
on), then one worker (concurrency 100, in the same process) drains them. The kinds of queue
take turns within each repeat, so a noisy machine affects them alike. When RabbitMQ runs on
this machine, its CPU time per message is read from /proc as well.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import aiormq

from aiotq import App, Worker

from .config import AMQP_URL, BATCH, CONCURRENCY
from .machine import server_cpu

#: The version 2 index and store, in lazy mode: what every classic queue is from RabbitMQ
#: 3.13 on.
V2_LAZY = {"x-queue-version": 2, "x-queue-mode": "lazy"}
#: name -> broker_transport_options
KINDS: dict[str, dict[str, Any]] = {
    "plain": {"max_priority": None, "queue_arguments": {}},
    "x-max-priority 10": {"max_priority": 10, "queue_arguments": {}},
    "plain + v2 lazy": {"max_priority": None, "queue_arguments": V2_LAZY},
    "x-max-priority 10 + v2 lazy": {"max_priority": 10, "queue_arguments": V2_LAZY},
    "x-max-priority 10 + v2": {"max_priority": 10, "queue_arguments": {"x-queue-version": 2}},
    "x-max-priority 10 + lazy": {"max_priority": 10,
                                "queue_arguments": {"x-queue-mode": "lazy"}},
}


def parse_names(text: str, known: Iterable[str], what: str) -> list[str]:
    """Comma-separated names, each one of ``known`` (an argparse type's work)."""
    names = text.split(",")
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)}")
    return names


def parse_kinds(text: str) -> list[str]:
    """``--kinds``: comma-separated names of :data:`KINDS`."""
    return parse_names(text, KINDS, "kinds")


def add_kinds_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kinds", type=parse_kinds, default=list(KINDS),
                        help=f"comma-separated, of: {', '.join(KINDS)}")


def rabbitmq_cpu() -> float | None:
    """Seconds of CPU the local RabbitMQ (beam.smp) has used, None when not found here."""
    return server_cpu("beam.smp")


def per_message(before: float | None, after: float | None, n: int) -> float | None:
    return None if before is None or after is None else (after - before) / n * 1e6


async def measure(options: dict[str, Any], n: int) -> tuple[float, float, float | None]:
    """Enqueue rate, drain rate and RabbitMQ's µs of CPU per message (both phases)."""
    queue = f"bench-queues-{uuid.uuid4().hex[:8]}"
    app = App("bench", broker=AMQP_URL, backend=None, task_default_queue=queue,
              broker_transport_options=options)
    done = asyncio.Event()
    left = n

    @app.task(name="bench.noop", ignore_result=True)
    async def noop(x: int) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            done.set()

    try:
        await app.broker.connect()
        cpu = rabbitmq_cpu()
        started = time.perf_counter()
        for first in range(0, n, BATCH):
            await asyncio.gather(*(noop.delay(x) for x in range(first, min(first + BATCH, n))))
        enqueue = n / (time.perf_counter() - started)
        worker = Worker(app, [queue], concurrency=CONCURRENCY)
        started = time.perf_counter()
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(done.wait(), 300)
        drain = n / (time.perf_counter() - started)
        worker.stop()
        await running
        cost = per_message(cpu, rabbitmq_cpu(), n)
    finally:
        await app.close()
        await delete(queue)
    return enqueue, drain, cost


async def delete(queue: str) -> None:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue)
    finally:
        await connection.close()


def spread(values: list[float], unit: str = "") -> str:
    return (f"{statistics.median(values):,.0f}{unit} "
            f"({min(values):,.0f}-{max(values):,.0f})")


def print_table(columns: Sequence[str],
                runs: Mapping[str, Sequence[Sequence[float | None]]]) -> None:
    """A markdown table: a row per name, each column's median (min-max) over its runs, or
    n/a where it was not measured (RabbitMQ's CPU on another machine)."""
    print(f"| {' | '.join(columns)} |")
    print(f"|{' --- |' * len(columns)}")
    for name, results in runs.items():
        cells = [name]
        for column in range(len(columns) - 1):
            values = [run[column] for run in results if run[column] is not None]
            cells.append(spread(cast(list[float], values)) if values else "n/a")
        print(f"| {' | '.join(cells)} |")


async def main(n: int, repeats: int, kinds: list[str]) -> None:
    runs: dict[str, list[tuple[float, float, float | None]]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            runs[kind].append(await measure(KINDS[kind], n))
    print(f"{n:,} tasks, {repeats} runs, median (min-max)\n")
    print_table(["queue", "enqueue / s", "drain / s", "RabbitMQ µs CPU per task"], runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_kinds_argument(parser)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.n, arguments.repeats, arguments.kinds))
