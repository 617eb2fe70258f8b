"""The broker contract (broker/base.py), run unchanged against every broker."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable

import pytest

from aiotq.broker.base import Broker, BrokerContext, Outgoing, Route, create_broker
from aiotq.clock import ManualClock
from aiotq.message import Message
from aiotq.settings import Settings
from tests.conftest import broker_urls

pytestmark = pytest.mark.parametrize("url", broker_urls())


def message(n: int, priority: int | None = None) -> Message:
    return Message(
        headers={"lang": "py", "task": "tests.noop", "id": f"id-{n}", "retries": 0},
        body=b'[[%d], {}, {}]' % n,
        content_type="application/json",
        correlation_id=f"id-{n}",
        reply_to="replies",
        priority=priority,
    )


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def broker(url: str, resolve_url: Callable[[str], str], clock: ManualClock
                 ) -> AsyncIterator[Broker]:
    settings = Settings(worker_lease_timeout=1.0, worker_eta_horizon=60.0)
    instance = create_broker(BrokerContext(resolve_url(url), settings, clock))
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


async def test_round_trip_keeps_every_field(broker: Broker, queue_name: str) -> None:
    sent = message(1, priority=7)
    await broker.publish(sent, Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        [delivery] = await consumer.fetch(10, timeout=5)
        got = delivery.message
        assert got.body == sent.body
        assert got.headers["id"] == "id-1" and got.headers["task"] == "tests.noop"
        assert got.content_type == sent.content_type
        assert got.correlation_id == sent.correlation_id
        assert got.reply_to == "replies"
        assert got.priority == 7
        assert delivery.queue == queue_name
        assert delivery.delivery_count == 1
        await delivery.ack()
        assert await consumer.fetch(10, timeout=0.2) == []
    finally:
        await consumer.close()


async def test_higher_priority_first_and_fifo_within_one(broker: Broker, queue_name: str
                                                         ) -> None:
    plan = [(1, 0), (2, 200), (3, 100), (4, 255), (5, 100), (6, None)]
    await broker.publish_many([Outgoing(message(n, p), Route(queue_name)) for n, p in plan])
    consumer = await broker.consumer([queue_name], prefetch=1)
    order = []
    try:
        for _ in plan:
            [delivery] = await consumer.fetch(1, timeout=5)
            order.append(delivery.message.headers["id"])
            await delivery.ack()
    finally:
        await consumer.close()
    assert order == ["id-4", "id-2", "id-3", "id-5", "id-1", "id-6"]


async def test_fetch_respects_limit_and_several_queues(broker: Broker, queue_name: str) -> None:
    other = queue_name + "-b"
    async with broker.producer() as producer:
        for n in range(3):
            await producer.publish(message(n), Route(queue_name))
        await producer.publish(message(9), Route(other))
    consumer = await broker.consumer([queue_name, other], prefetch=10)
    seen: list[str] = []
    try:
        while len(seen) < 4:
            batch = await consumer.fetch(2, timeout=5)
            assert 1 <= len(batch) <= 2
            for delivery in batch:
                seen.append(delivery.message.headers["id"])
                await delivery.ack()
    finally:
        await consumer.close()
    assert sorted(seen) == ["id-0", "id-1", "id-2", "id-9"]


async def test_dead_letter_keeps_the_reason(broker: Broker, queue_name: str) -> None:
    await broker.publish(message(1), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.dead_letter("poison: delivered 6 times")
        assert await consumer.fetch(1, timeout=0.2) == []
    finally:
        await consumer.close()
    [dead] = await broker.dead_letters(queue_name)
    assert dead.reason == "poison: delivered 6 times"
    assert dead.message is not None and dead.message.headers["id"] == "id-1"


async def test_release_gives_the_message_back(broker: Broker, queue_name: str) -> None:
    await broker.publish(message(1), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.release()
        [again] = await consumer.fetch(1, timeout=5)
        assert again.message.headers["id"] == "id-1"
        await again.ack()
    finally:
        await consumer.close()


async def test_close_releases_unsettled_deliveries(broker: Broker, queue_name: str) -> None:
    await broker.publish(message(1), Route(queue_name))
    first = await broker.consumer([queue_name], prefetch=1)
    [_unsettled] = await first.fetch(1, timeout=5)
    await first.close()
    second = await broker.consumer([queue_name], prefetch=1)
    try:
        [again] = await second.fetch(1, timeout=5)
        assert again.message.headers["id"] == "id-1"
        await again.ack()
    finally:
        await second.close()


async def test_live_consumer_keeps_its_lease(broker: Broker, queue_name: str) -> None:
    # The lease timeout is 1 s here: a live consumer must hold on well past it.
    await broker.publish(message(1), Route(queue_name))
    holder = await broker.consumer([queue_name], prefetch=1)
    other = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await holder.fetch(1, timeout=5)
        await asyncio.sleep(2.5)
        assert await other.fetch(1, timeout=0.5) == []
        await delivery.ack()
    finally:
        await holder.close()
        await other.close()


async def test_purge(broker: Broker, queue_name: str) -> None:
    for n in range(3):
        await broker.publish(message(n), Route(queue_name))
    assert await broker.purge(queue_name) == 3
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        assert await consumer.fetch(1, timeout=0.2) == []
    finally:
        await consumer.close()


async def test_near_eta_is_delivered_now(broker: Broker, queue_name: str, clock: ManualClock
                                         ) -> None:
    eta = dt.datetime.fromtimestamp(clock.time() + 5, dt.UTC)
    await broker.publish(message(1), Route(queue_name), eta=eta)
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await consumer.fetch(1, timeout=5)
        await delivery.ack()
    finally:
        await consumer.close()
