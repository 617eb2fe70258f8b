"""benchmarks.amqp_enqueue: every variant enqueues on a real RabbitMQ and cleans up."""

from __future__ import annotations

import argparse

import aiormq
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from benchmarks import amqp_enqueue, amqp_queues
from tests.conftest import AMQP_URL, require_service

pytestmark = pytest.mark.amqp


@pytest.fixture(autouse=True)
def _rabbitmq(monkeypatch: pytest.MonkeyPatch) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    monkeypatch.setattr(amqp_enqueue, "AMQP_URL", AMQP_URL)
    monkeypatch.setattr(amqp_queues, "AMQP_URL", AMQP_URL)


@pytest.mark.parametrize("variant", amqp_enqueue.VARIANTS)
async def test_each_variant_enqueues_and_deletes_its_queue(
        variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    deleted: list[str] = []
    delete = amqp_queues.delete

    async def recording_delete(queue: str) -> None:
        deleted.append(queue)
        await delete(queue)

    monkeypatch.setattr(amqp_enqueue, "delete", recording_delete)
    rate, client_cost, _ = await amqp_enqueue.measure(variant, 300)
    assert rate > 0 and client_cost > 0
    [queue] = deleted
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.queue_declare(queue, passive=True)
    finally:
        await connection.close()


def test_unknown_variants_are_refused() -> None:
    assert amqp_enqueue.parse_variants("as-is,unconfirmed") == ["as-is", "unconfirmed"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown variants: fast"):
        amqp_enqueue.parse_variants("as-is,fast")
