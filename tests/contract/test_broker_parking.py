"""Far ETAs parked by the app's clock: every broker whose parking follows that clock.

RabbitMQ parks with per-message TTLs, which follow the server's real time; its parking is
tested in tests/integration/test_amqp.py instead.
"""

from __future__ import annotations

import datetime as dt

import pytest

from aiotq.broker.base import Broker, Route
from aiotq.clock import ManualClock
from tests.conftest import REDIS_URL
from tests.contract.test_broker import broker, clock, message

__all__ = ["broker", "clock"]

pytestmark = pytest.mark.parametrize(
    "url",
    [
        pytest.param("memory://", id="memory"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param(REDIS_URL, id="redis", marks=pytest.mark.redis),
    ],
)


def at(clock: ManualClock, seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.time() + seconds, dt.UTC)


async def test_far_eta_waits_in_the_broker(broker: Broker, queue_name: str, clock: ManualClock
                                           ) -> None:
    await broker.publish(message(1), Route(queue_name), eta=at(clock, 3600))
    await broker.publish(message(2), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        [now] = await consumer.fetch(10, timeout=5)
        assert now.message.headers["id"] == "id-2"
        await now.ack()
        assert await consumer.fetch(10, timeout=0.3) == []
        await clock.advance(3601)
        [due] = await consumer.fetch(10, timeout=5)
        assert due.message.headers["id"] == "id-1"
        await due.ack()
    finally:
        await consumer.close()


async def test_defer_parks_until_eta(broker: Broker, queue_name: str, clock: ManualClock
                                     ) -> None:
    await broker.publish(message(1), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.defer(at(clock, 7200))
        assert await consumer.fetch(1, timeout=0.3) == []
        await clock.advance(7201)
        [again] = await consumer.fetch(1, timeout=5)
        assert again.message.headers["id"] == "id-1"
        assert again.delivery_count == 1
        await again.ack()
    finally:
        await consumer.close()
