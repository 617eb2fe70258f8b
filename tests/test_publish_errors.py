"""Publish retry and OperationalError, with a broker whose connection always fails."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from aiotq import App, OperationalError
from aiotq.broker import base
from aiotq.broker.base import BrokerContext, Outgoing, Route
from aiotq.exceptions import TransportError
from aiotq.message import Message


class RefusingBroker:
    """Every publish fails as a refused connection would."""

    attempts = 0

    def __init__(self, context: BrokerContext) -> None:
        self.context = context

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, message: Message, route: Route, *, eta: Any = None) -> None:
        type(self).attempts += 1
        raise TransportError("[Errno 111] Connection refused") from ConnectionRefusedError(111)

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        await self.publish(items[0].message, items[0].route)

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[RefusingBroker]:
        yield self


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setitem(base.BROKERS, "refuse", f"{__name__}:RefusingBroker")
    RefusingBroker.attempts = 0
    return App("proj", broker="refuse://", backend="memory://")


async def test_retries_by_policy_then_operational_error(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(add.OperationalError) as info:
        await add.apply_async((2, 2), retry_policy={"max_retries": 2, "interval_start": 0,
                                                    "interval_step": 0.01, "interval_max": 0.01})
    assert RefusingBroker.attempts == 3
    assert isinstance(info.value, OperationalError)
    assert isinstance(info.value.__cause__, TransportError)
    assert "Connection refused" in str(info.value)


async def test_default_policy_and_retry_false(app: App) -> None:
    @app.task
    async def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(OperationalError):
        await add.delay(2, 2)
    assert RefusingBroker.attempts == 4
    with pytest.raises(OperationalError):
        await add.apply_async((2, 2), retry=False)
    assert RefusingBroker.attempts == 5
    app.conf.update(task_publish_retry_policy={"max_retries": 0})
    with pytest.raises(OperationalError):
        await add.delay(2, 2)
    assert RefusingBroker.attempts == 6
