"""The tasks of the demo: calling.rst's examples, run by an ``aiotq worker`` process.

``python examples/demo.py`` starts ``aiotq worker -A examples.demo_tasks:app`` and calls
these from the producer side.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiotq import App, AsyncResult, Task

# The broker URL comes from the demo (``-b`` for the worker, the setting for the producer).
# yaml is accepted on top of the defaults so the serializer tour can show it; pickle is not.
app = App("demo", accept_content=("json", "msgpack", "yaml"))


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    """A plain ``def`` task: the worker runs it in its thread pool, off the event loop."""
    return x * y


@app.task
async def double(x: int) -> int:
    return x * 2


@app.task(bind=True)
async def hello(self: Task[Any, Any], a: int, b: int) -> str:
    """calling.rst's on_message example: two PROGRESS states, then the result."""
    await asyncio.sleep(0.3)
    await self.update_state(state="PROGRESS", meta={"progress": 50})
    await asyncio.sleep(0.3)
    await self.update_state(state="PROGRESS", meta={"progress": 90})
    await asyncio.sleep(0.3)
    return f"hello world: {a + b}"


@app.task
async def echo(value: Any) -> Any:
    """Return what came in, to show a serializer's round trip."""
    return value


@app.task
async def fail(message: str) -> None:
    raise ValueError(message)


@app.task
async def error_handler(uuid: str) -> str:
    """calling.rst's errback: it gets the failed task's id and reads its exception."""
    result: AsyncResult[Any] = AsyncResult(uuid)
    exc = await result.get(propagate=False)
    return f"Task {uuid} raised exception: {exc!r}\n{result.traceback}"
