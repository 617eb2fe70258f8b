"""Batched acks: ``multiple`` only where every lower tag is acked, each tag acked once, in
order, also when the connection's write queue is full (a fake channel stands in)."""

from __future__ import annotations

import asyncio
import random
import struct
from types import SimpleNamespace
from typing import Any

from aiormq.abc import ChannelFrame

from aiotq._amqp import Acker

ACK = struct.Struct(">BHIHHQBB")


def decode(payload: bytes) -> list[tuple[int, bool]]:
    """(delivery tag, multiple) of each Basic.Ack frame in ``payload``."""
    out = []
    for start in range(0, len(payload), ACK.size):
        kind, _, size, class_id, method, tag, bits, end = ACK.unpack_from(payload, start)
        assert (kind, size, class_id, method, end) == (1, 13, 60, 80, 0xCE)
        out.append((tag, bool(bits)))
    return out


class Broker:
    """RabbitMQ's side of acks: an unknown tag is a channel error."""

    def __init__(self, delivered: int) -> None:
        self.unacked = set(range(1, delivered + 1))

    def apply(self, acks: list[tuple[int, bool]], acked_by_app: set[int]) -> None:
        for tag, multiple in acks:
            assert tag in self.unacked, f"unknown delivery tag {tag}"
            settled = {t for t in self.unacked if t <= tag} if multiple else {tag}
            assert settled <= acked_by_app, f"acked {settled - acked_by_app} too early"
            self.unacked -= settled


def fake_channel(maxsize: int = 0) -> Any:
    return SimpleNamespace(number=5, is_closed=False, write_queue=asyncio.Queue(maxsize))


async def test_contiguous_acks_are_one_multiple_ack_and_gaps_single_ones() -> None:
    acker = Acker(fake_channel())
    assert decode(acker.frames([1, 2, 3])) == [(3, True)]
    assert decode(acker.frames([6, 5])) == [(5, False), (6, False)]
    assert decode(acker.frames([4])) == [(4, True)]  # 5 and 6 were acked already
    assert decode(acker.frames([8, 7, 7])) == [(8, True)]
    assert acker.frames([6, 8]) == b""  # acked before: never twice


async def test_random_ack_orders_never_ack_too_early_or_twice() -> None:
    rng = random.Random(7)
    for _ in range(200):
        delivered = rng.randrange(1, 60)
        order = list(range(1, delivered + 1))
        rng.shuffle(order)
        kept = set(rng.sample(order, min(delivered, rng.randrange(0, 4))))  # never acked
        acker, broker, acked = Acker(fake_channel()), Broker(delivered), set[int]()
        tags = [tag for tag in order if tag not in kept]
        while tags:
            size = rng.randrange(1, 8)
            batch, tags = tags[:size], tags[size:]
            if rng.random() < 0.2:
                batch.append(rng.choice(batch))  # acked twice by mistake
            acked |= set(batch)
            broker.apply(decode(acker.frames(batch)), acked)
        assert broker.unacked == kept


async def test_acks_of_a_busy_channel_wait_for_the_batch() -> None:
    channel = fake_channel()
    acker = Acker(channel, delay=0.05, batch=4)
    for tag in range(1, 11):
        acker.delivered(tag)
    acker.ack(2)
    acker.ack(1)
    await asyncio.sleep(0.01)
    assert channel.write_queue.empty()  # deliveries 3-10 are still out: wait a little
    acker.ack(3)
    acker.ack(4)  # a full batch: at once
    await asyncio.sleep(0)
    frame: ChannelFrame = channel.write_queue.get_nowait()
    assert decode(frame.payload) == [(4, True)]
    acker.ack(6)
    await asyncio.sleep(0.1)  # the delay passed
    assert decode(channel.write_queue.get_nowait().payload) == [(6, False)]


async def test_the_last_outstanding_delivery_is_acked_at_once() -> None:
    channel = fake_channel()
    acker = Acker(channel, delay=10.0)
    acker.delivered(1)
    acker.ack(1)
    await asyncio.sleep(0)
    assert decode(channel.write_queue.get_nowait().payload) == [(1, True)]


async def test_a_full_write_queue_keeps_acks_in_order() -> None:
    channel = fake_channel(maxsize=1)
    channel.write_queue.put_nowait(ChannelFrame(b"", should_close=False))  # full
    acker = Acker(channel, delay=0.0)
    for tag in (1, 2, 3):
        acker.delivered(tag)
    acker.ack(1)
    await asyncio.sleep(0.01)  # its writer waits for room
    acker.ack(3)
    assert channel.write_queue.get_nowait().payload == b""
    await asyncio.sleep(0.01)  # 1 written, 3 waits for room
    acker.ack(2)
    written: list[tuple[int, bool]] = []
    async with asyncio.timeout(1):
        while len(written) < 3:
            written += decode((await channel.write_queue.get()).payload)
    assert written == [(1, True), (3, False), (2, True)]


async def test_nothing_is_written_on_a_closed_channel() -> None:
    channel = fake_channel()
    acker = Acker(channel)
    channel.is_closed = True
    acker.ack(1)
    await asyncio.sleep(0)
    assert channel.write_queue.empty()
