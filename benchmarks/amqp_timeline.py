"""Where a RabbitMQ round trip's time goes, per kind of task queue: sequential ``delay()`` +
``get()`` (the ``rpc://`` backend, one worker process, concurrency 100), timed on one
``time.perf_counter()`` clock across the two processes (CLOCK_MONOTONIC on Linux).

    python -m benchmarks.amqp_timeline [--n 600] [--repeats 2] [--kinds plain,...]

For each round trip, measured from the start of ``delay()``: when ``delay()`` returned (the
publisher confirm arrived), when the task started (it returns its own ``perf_counter()``)
and when ``get()`` returned. The kinds of queue are those of ``benchmarks.amqp_queues`` and
take turns within each repeat, so a noisy machine affects them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from aiotq import App, Worker

from .amqp_queues import KINDS, add_kinds_argument, delete
from .config import AMQP_URL, CONCURRENCY
from .stats import percentile

WARMUP = 50


def make_app(queue: str, kind: str) -> tuple[App, Any]:
    app = App("bench", broker=AMQP_URL, backend="rpc://", task_default_queue=queue,
              broker_transport_options=KINDS[kind])

    @app.task(name="bench.stamp")
    async def stamp() -> float:
        return time.perf_counter()

    return app, stamp


def run_worker(queue: str, kind: str) -> None:
    app, _ = make_app(queue, kind)
    asyncio.run(Worker(app, [queue], concurrency=CONCURRENCY).run())


async def round_trips(queue: str, kind: str, n: int) -> list[tuple[float, float, float]]:
    """(``delay()`` returned, task started, ``get()`` returned) per round trip, in ms."""
    app, stamp = make_app(queue, kind)
    rows = []
    async with app:
        for _ in range(WARMUP):  # the worker is up once these come back
            await (await stamp.delay()).get(timeout=30)
        for _ in range(n):
            started = time.perf_counter()
            result = await stamp.delay()
            sent = time.perf_counter()
            ran = await result.get(timeout=10)
            done = time.perf_counter()
            rows.append(((sent - started) * 1e3, (ran - started) * 1e3, (done - started) * 1e3))
    return rows


async def measure(kind: str, n: int) -> list[tuple[float, float, float]]:
    queue = f"bench-timeline-{uuid.uuid4().hex[:8]}"
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.amqp_timeline", "--worker", queue, kind)
    try:
        return await round_trips(queue, kind, n)
    finally:
        worker.kill()
        await worker.wait()
        await delete(queue)


async def main(n: int, repeats: int, kinds: list[str]) -> None:
    runs: dict[str, list[list[tuple[float, float, float]]]] = {kind: [] for kind in kinds}
    for _ in range(repeats):
        for kind in kinds:
            runs[kind].append(await measure(kind, n))
    print(f"{n:,} round trips per run, {repeats} runs; p50 of each run, ms\n")
    print("| task queue | `delay()` returns | task starts | `get()` returns "
          "| round trip p99 |")
    print("| --- | --- | --- | --- | --- |")
    for kind, results in runs.items():
        cells = [" / ".join(f"{statistics.median(row[i] for row in rows):.2f}"
                            for rows in results) for i in range(3)]
        p99 = " / ".join(f"{percentile(sorted(row[2] for row in rows), 99):.2f}"
                         for rows in results)
        print(f"| {kind} | {' | '.join(cells)} | {p99} |")


def round_trip_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a tool timing sequential round trips (its docstring's first part as
    the description)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="round trips per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs")
    return parser


if __name__ == "__main__":
    parser = round_trip_parser(__doc__)
    add_kinds_argument(parser)
    parser.add_argument("--worker", nargs=2, metavar=("QUEUE", "KIND"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        run_worker(*arguments.worker)
        sys.exit()
    asyncio.run(main(arguments.n, arguments.repeats, arguments.kinds))
