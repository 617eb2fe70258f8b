"""benchmarks.round_trip_cpu: round trips against a real broker and worker, costed from /proc."""

from __future__ import annotations

import argparse
import uuid

import aiormq
import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from redis.asyncio import Redis

from benchmarks import round_trip_cpu
from benchmarks.config import AMQP_URL, REDIS_URL
from tests.conftest import require_service


@pytest.fixture(autouse=True)
def _few_warmups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(round_trip_cpu, "WARMUP", 5)


@pytest.mark.redis
@pytest.mark.parametrize("name", ["aiotq", "raw-redis"])
async def test_a_redis_round_trip_is_costed_and_leaves_no_keys(name: str) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    tag = f"test{uuid.uuid4().hex[:8]}"
    cost = await round_trip_cpu.measure(name, "redis", 50, tag)
    assert 0 < cost.p50 <= cost.p99
    assert cost.caller > 0 and cost.worker > 0 and cost.busy > 0
    assert cost.server is not None and cost.server > 0  # the Redis of this machine
    client = Redis.from_url(REDIS_URL)
    try:
        assert [key async for key in client.scan_iter(match=f"*{tag}*")] == []
    finally:
        await client.aclose()


@pytest.mark.amqp
async def test_an_amqp_round_trip_is_costed_and_deletes_its_queue() -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    tag = f"test{uuid.uuid4().hex[:8]}"
    cost = await round_trip_cpu.measure("aiotq", "amqp", 50, tag)
    assert 0 < cost.p50 <= cost.p99 and cost.caller > 0 and cost.worker > 0
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.queue_declare(f"bench{tag}", passive=True)
    finally:
        await connection.close()


def test_frameworks_are_checked_against_the_broker() -> None:
    assert round_trip_cpu.parse_adapters("aiotq,arq", "redis") == ["aiotq", "arq"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown frameworks on amqp: arq"):
        round_trip_cpu.parse_adapters("aiotq,arq", "amqp")
