"""The tasks of calling.rst, built on a fresh App for every contract test."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiotq import App, AsyncResult, Task


class CustomError(Exception):
    """A user's exception type: get() must re-raise this very type."""


@dataclass
class Recorder:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, BaseException, str | None]] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)


@dataclass
class CallingApp:
    app: App
    record: Recorder
    add: Task[[int, int], int]
    mul: Task[[int, int], int]
    hello: Task[[int, int], str]
    other: Task[[int], int]
    boom: Task[[], None]
    custom_boom: Task[[], None]
    error_handler: Task[[str], None]
    flaky: Task[[int], int]
    echo_headers: Task[[], dict[str, Any]]
    echo: Task[[Any], Any]


def make_app(queue: str, **settings: Any) -> CallingApp:
    app = App("proj", task_default_queue=queue, **settings)
    record = Recorder()

    @app.task
    async def add(x: int, y: int) -> int:
        record.calls.append(("add", (x, y)))
        return x + y

    @app.task
    def mul(x: int, y: int) -> int:
        record.threads.append(threading.current_thread().name)
        record.calls.append(("mul", (x, y)))
        return x * y

    @app.task(bind=True)
    async def hello(self: Task[[int, int], str], a: int, b: int) -> str:
        await self.update_state(state="PROGRESS", meta={"progress": 50})
        await self.update_state(state="PROGRESS", meta={"progress": 90})
        return f"hello world: {a + b}"

    @app.task
    async def other(x: int) -> int:
        record.calls.append(("other", x))
        return -x

    @app.task
    async def boom() -> None:
        raise ValueError("boom")

    @app.task
    async def custom_boom() -> None:
        raise CustomError("custom", 7)

    @app.task
    async def error_handler(uuid: str) -> None:
        result: AsyncResult[Any] = AsyncResult(uuid)
        exc = await result.get(propagate=False)
        record.errors.append((uuid, exc, result.traceback))

    @app.task(bind=True, max_retries=3)
    async def flaky(self: Task[[int], int], succeed_on: int) -> int:
        if self.request.retries < succeed_on:
            raise self.retry(countdown=1, exc=ConnectionError("flaky"))
        return self.request.retries

    @app.task(bind=True)
    async def echo_headers(self: Task[[], dict[str, Any]]) -> dict[str, Any]:
        return {"custom": self.request.headers.get("x-custom")}

    @app.task
    async def echo(value: Any) -> Any:
        return value

    return CallingApp(app, record, add, mul, hello, other, boom, custom_boom, error_handler,
                      flaky, echo_headers, echo)
