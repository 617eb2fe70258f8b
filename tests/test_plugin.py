"""The pytest plugin's fixtures, used as a user would: override aiotq_app, use aiotq_worker."""

from __future__ import annotations

import pytest

from aiotq import App, states
from aiotq.testing import InProcessWorker

app = App("userproj", broker="redis://nowhere.invalid:1/0")


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def aiotq_app() -> App:
    return app


async def test_delay_runs_in_process(aiotq_worker: InProcessWorker) -> None:
    result = await add.delay(2, 2)
    assert await result.get(timeout=5) == 4


async def test_countdown_without_waiting(aiotq_worker: InProcessWorker) -> None:
    result = await add.apply_async((2, 2), countdown=3600)
    assert await result.refresh() == states.PENDING
    await aiotq_worker.advance(3600)
    assert await result.get(timeout=5) == 4


def test_settings_are_restored() -> None:
    assert app.conf.broker == "redis://nowhere.invalid:1/0"
