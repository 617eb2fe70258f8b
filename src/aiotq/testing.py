"""pytest plugin: run your own app in-process, its worker in the test's event loop.

Registered through the ``pytest11`` entry point, so installing aiotq is enough. Point it at
your app with a fixture (or the ``aiotq_app`` ini option, ``module:attribute``)::

    @pytest.fixture
    def aiotq_app():
        return my_project.tasks.app

    async def test_add(aiotq_worker):
        result = await add.delay(2, 2)
        assert await result.get(timeout=5) == 4

    async def test_countdown(aiotq_worker):
        result = await add.apply_async((2, 2), countdown=60)
        await aiotq_worker.advance(60)          # no real waiting
        assert await result.get(timeout=5) == 4

During the test the app uses ``memory://`` for broker and backend and a
:class:`~aiotq.clock.ManualClock`; its settings are restored afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from .app import App
from .broker.base import DeadLetter
from .clock import Clock, ManualClock
from .worker import Worker

try:  # pytest-asyncio's own decorator works in its strict and auto modes alike
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - without pytest-asyncio async fixtures cannot run
    async_fixture = pytest.fixture  # type: ignore[assignment]


@dataclass(slots=True)
class InProcessWorker:
    """A running in-process worker and the clock it follows."""

    app: App
    worker: Worker
    clock: Clock

    async def advance(self, seconds: float) -> None:
        """Move the manual clock forward: due ETAs run, countdowns elapse."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a ManualClock")
        await self.clock.advance(seconds)

    async def join(self, timeout: float | None = 10.0) -> None:
        """Wait until every message the worker has taken is settled."""
        await self.worker.join(timeout)

    async def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        return await self.app.broker.dead_letters(queue or self.app.conf.task_default_queue)


@contextlib.asynccontextmanager
async def run_in_process(
    app: App,
    *,
    broker: str = "memory://",
    backend: str | None = None,
    clock: Clock | None = None,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    **settings: Any,
) -> AsyncIterator[InProcessWorker]:
    """Point ``app`` at ``broker`` (memory:// by default) with ``clock`` (a fresh
    ManualClock by default), run a worker in this event loop, restore everything after."""
    conf = app.conf
    saved_settings = {name: getattr(conf, name) for name in settings}
    saved = (conf.forced_urls, app.clock, app.shared)
    conf.update(settings)
    conf.forced_urls = (broker, backend or broker)
    app.clock = clock if clock is not None else ManualClock()
    app.shared = {}
    try:
        worker = Worker(app, queues, concurrency=concurrency, poll_interval=0.05)
        async with worker:
            yield InProcessWorker(app, worker, app.clock)
    finally:
        await app.close()
        conf.forced_urls, app.clock, app.shared = saved
        conf.update(saved_settings)


def _load_app(spec: str) -> App:
    module_name, _, attribute = spec.partition(":")
    value = getattr(importlib.import_module(module_name), attribute or "app")
    if not isinstance(value, App):
        raise pytest.UsageError(f"aiotq_app = {spec!r} is not an aiotq App")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("aiotq_app", "the App the aiotq fixtures run (module:attribute)", default="")


@pytest.fixture
def aiotq_app(request: pytest.FixtureRequest) -> App:
    """Your App. Override this fixture, or set ``aiotq_app = module:app`` in pytest's ini."""
    spec = str(request.config.getini("aiotq_app"))
    if not spec:
        raise pytest.UsageError(
            "aiotq: define an `aiotq_app` fixture returning your App, "
            "or set `aiotq_app = module:app` in your pytest configuration"
        )
    return _load_app(spec)


@pytest.fixture
def aiotq_clock() -> ManualClock:
    """The manual clock the in-process worker follows."""
    return ManualClock()


@async_fixture
async def aiotq_worker(aiotq_app: App, aiotq_clock: ManualClock
                       ) -> AsyncIterator[InProcessWorker]:
    """Your app on memory://, its worker running in the test's event loop."""
    async with run_in_process(aiotq_app, clock=aiotq_clock) as running:
        yield running
