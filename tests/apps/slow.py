"""An app for worker-process tests; every run of a task is recorded in a file.

The broker comes from ``AIOTQ_BROKER_URL``, the queue from ``AIOTQ_TEST_QUEUE`` and the run
log from ``AIOTQ_TEST_RUNS``: each run appends ``start <tag> <pid>`` and, when it finishes,
``end <tag> <pid>``, so a test can count runs across worker processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from aiotq import App, Task

app = App(
    "slow",
    task_default_queue=os.environ.get("AIOTQ_TEST_QUEUE", "celery"),
    # Short leases so a killed worker's task is taken over within seconds.
    worker_lease_timeout=float(os.environ.get("AIOTQ_TEST_LEASE", "2")),
    worker_shutdown_timeout=10.0,
)


def record(event: str, tag: str) -> None:
    path = os.environ.get("AIOTQ_TEST_RUNS")
    if path:
        with open(path, "a", encoding="utf-8") as runs:
            runs.write(f"{event} {tag} {os.getpid()}\n")


@app.task
async def sleepy(seconds: float, tag: str) -> str:
    """Sleep, recording the start and the end of this run."""
    record("start", tag)
    await asyncio.sleep(seconds)
    record("end", tag)
    return tag


@app.task
def stuck(seconds: float, tag: str) -> str:
    """A ``def`` task: its thread cannot be cancelled when the worker stops."""
    record("start", tag)
    time.sleep(seconds)
    record("end", tag)
    return tag


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
async def event_loop() -> str:
    """The module of the event loop the worker runs tasks on (``--loop``)."""
    return type(asyncio.get_running_loop()).__module__


@app.task(bind=True)
async def count_to(self: Task[Any, Any], total: int, step: float) -> int:
    """Report ``{"current", "total"}`` progress on the way to ``total``."""
    for current in range(total):
        await self.update_state(state="PROGRESS", meta={"current": current, "total": total})
        await asyncio.sleep(step)
    return total


@app.task
async def broken(message: str) -> None:
    raise ValueError(message)
