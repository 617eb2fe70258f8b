"""Each step of a RabbitMQ round trip, on one clock across caller and worker: sequential
``delay()`` + ``get()`` as in ``benchmarks.amqp_timeline``, and for each round trip the
time, since ``delay()`` was called, at which the publish was written, the worker read and
decoded the delivery, started the task, stored and wrote the result, and the caller read
the publisher confirm and the reply.

    python -m benchmarks.amqp_steps [--n 600] [--repeats 2] [--kind "x-max-priority 10 + lazy"]

It wraps a few of aiotq's internal methods, in both processes, to note when each is entered
(about a microsecond each), so it follows aiotq's internals and needs mending when they
change. The default kind is the queue aiotq declares by default on RabbitMQ before 3.12.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiotq import Worker
from aiotq._amqp import Publisher, _Reader
from aiotq.broker.amqp import AMQPConsumer
from aiotq.execution import Executor
from aiotq.results.rpc import RPCBackend

from .amqp_queues import KINDS, delete
from .amqp_timeline import WARMUP, make_app, round_trip_parser

Event = tuple[str, float]

#: (process, step, class, method): the step is noted when the method is entered.
HOOKS: list[tuple[str, str, type, str]] = [
    ("caller", "publish written", Publisher, "_write"),
    ("worker", "delivery read", _Reader, "feed_data"),
    ("worker", "delivery decoded", AMQPConsumer, "_on_delivery"),
    ("worker", "task started", Executor, "handle"),
    ("worker", "result stored", RPCBackend, "store"),
    ("worker", "reply written", Publisher, "_write"),
    ("caller", "confirm read", Publisher, "_on_confirm"),
    ("caller", "reply read", RPCBackend, "_on_reply"),
]
#: Each step of the table, after which steps it comes (the ends are noted by the caller).
FOLLOWS: dict[str, tuple[str, ...]] = {
    "publish written": ("delay() called",),
    "delivery read": ("publish written",),
    "delivery decoded": ("delivery read",),
    "task started": ("delivery decoded",),
    "result stored": ("task started",),
    "reply written": ("result stored",),
    "reply read": ("reply written",),
    "confirm read": ("delivery read",),
    "delay() returned": ("confirm read",),
    "get() returned": ("delay() returned", "reply read"),
}
#: Only a call with something to do is a step (a write with a batch, a read with data).
WORTH_NOTING: dict[str, Callable[..., bool]] = {
    "_write": lambda publisher, *_: bool(publisher._queue),
    "feed_data": lambda _, data: bool(data),
}

events: list[Event] = []


def note(step: str) -> None:
    events.append((step, time.perf_counter()))


def install(process: str) -> None:
    for side, step, owner, name in HOOKS:
        if side != process:
            continue
        original = getattr(owner, name)
        worth = WORTH_NOTING.get(name)
        if asyncio.iscoroutinefunction(original):
            async def hooked_async(*args: Any, _original: Any = original, _step: str = step,
                                   **kwargs: Any) -> Any:
                note(_step)
                return await _original(*args, **kwargs)
            hooked: Callable[..., Any] = hooked_async
        else:
            def hooked_sync(*args: Any, _original: Any = original, _step: str = step,
                            _worth: Any = worth, **kwargs: Any) -> Any:
                if _worth is None or _worth(*args):
                    note(_step)
                return _original(*args, **kwargs)
            hooked = hooked_sync
        setattr(owner, name, functools.wraps(original)(hooked))


def run_worker(queue: str, kind: str, out: str) -> None:
    install("worker")
    app, _ = make_app(queue, kind)
    worker = Worker(app, [queue], concurrency=100)

    async def serve() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()

    asyncio.run(serve())
    with open(out, "w") as file:
        json.dump(events, file)


async def round_trips(queue: str, kind: str, n: int) -> list[Event]:
    app, stamp = make_app(queue, kind)
    async with app:
        for _ in range(WARMUP):  # the worker is up once these come back
            await (await stamp.delay()).get(timeout=30)
        events.clear()
        for _ in range(n):
            note("delay() called")
            result = await stamp.delay()
            note("delay() returned")
            await result.get(timeout=10)
            note("get() returned")
    return list(events)


def per_round_trip(merged: list[Event]) -> list[dict[str, float]]:
    """Each round trip's steps, in ms since its ``delay()``: the first of each name."""
    trips: list[dict[str, float]] = []
    started: float | None = None
    for step, at in sorted(merged, key=lambda event: event[1]):
        if step == "delay() called":
            started = at
            trips.append({step: 0.0})
        elif started is not None:
            trips[-1].setdefault(step, (at - started) * 1e3)
    return [trip for trip in trips if len(trip) == len(FOLLOWS) + 1]


async def measure(kind: str, n: int) -> list[dict[str, float]]:
    queue = f"bench-steps-{uuid.uuid4().hex[:8]}"
    handle, out = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.amqp_steps", "--worker", queue, kind, out)
    try:
        caller_events = await round_trips(queue, kind, n)
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()
        await delete(queue)
    return per_round_trip(caller_events + read_events(out))


def read_events(path: str) -> list[Event]:
    """What the worker wrote at its exit (and the file gone)."""
    with open(path) as file:
        events_read = [(step, at) for step, at in json.load(file)]
    os.unlink(path)
    return events_read


async def main(n: int, repeats: int, kind: str) -> None:
    install("caller")
    runs = [await measure(kind, n) for _ in range(repeats)]
    print(f"{kind}: {n:,} round trips per run, {repeats} runs "
          f"({', '.join(str(len(trips)) for trips in runs)} with every step); "
          "p50 of each run, ms\n")
    print("| step | since `delay()` was called | after | since then |")
    print("| --- | --- | --- | --- |")
    for step, after in FOLLOWS.items():
        since = " / ".join(f"{statistics.median(trip[step] for trip in trips):.3f}"
                           for trips in runs)
        gap = " / ".join(
            f"{statistics.median(trip[step] - max(trip[a] for a in after) for trip in trips):.3f}"
            for trips in runs)
        print(f"| {step} | {since} | {' and '.join(after)} | {gap} |")


if __name__ == "__main__":
    parser = round_trip_parser(__doc__)
    parser.add_argument("--kind", choices=list(KINDS), default="x-max-priority 10 + lazy")
    parser.add_argument("--worker", nargs=3, metavar=("QUEUE", "KIND", "OUT"),
                        help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        run_worker(*arguments.worker)
        sys.exit()
    asyncio.run(main(arguments.n, arguments.repeats, arguments.kind))
