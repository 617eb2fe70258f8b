"""Batched acks: ``multiple`` only where every lower tag is acked, each tag acked once, and
nothing written once RabbitMQ closed the channel (a fake channel and socket stand in)."""

from __future__ import annotations

import asyncio
import random
import struct
from types import SimpleNamespace
from typing import Any

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


class Socket:
    """What the Acker writes to: the payloads, and whether the connection is closing."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.transport = SimpleNamespace(is_closing=lambda: False)

    def write(self, payload: bytes) -> None:
        self.written.append(payload)

    def acks(self) -> list[list[tuple[int, bool]]]:
        out, self.written = [decode(payload) for payload in self.written], []
        return out


def fake_channel() -> Any:
    return SimpleNamespace(number=5, is_closed=False, _close_exception=None)


def acker(channel: Any = None, **options: Any) -> tuple[Acker, Socket]:
    socket = Socket()
    return Acker(channel or fake_channel(), socket, **options), socket  # type: ignore[arg-type]


async def test_contiguous_acks_are_one_multiple_ack_and_gaps_single_ones() -> None:
    acks, _ = acker()
    assert decode(acks.frames([1, 2, 3])) == [(3, True)]
    assert decode(acks.frames([6, 5])) == [(5, False), (6, False)]
    assert decode(acks.frames([4])) == [(4, True)]  # 5 and 6 were acked already
    assert decode(acks.frames([8, 7, 7])) == [(8, True)]
    assert acks.frames([6, 8]) == b""  # acked before: never twice


async def test_random_ack_orders_never_ack_too_early_or_twice() -> None:
    rng = random.Random(7)
    for _ in range(200):
        delivered = rng.randrange(1, 60)
        order = list(range(1, delivered + 1))
        rng.shuffle(order)
        kept = set(rng.sample(order, min(delivered, rng.randrange(0, 4))))  # never acked
        (acks, _), broker, acked = acker(), Broker(delivered), set[int]()
        tags = [tag for tag in order if tag not in kept]
        while tags:
            size = rng.randrange(1, 8)
            batch, tags = tags[:size], tags[size:]
            if rng.random() < 0.2:
                batch.append(rng.choice(batch))  # acked twice by mistake
            acked |= set(batch)
            broker.apply(decode(acks.frames(batch)), acked)
        assert broker.unacked == kept


async def test_acks_of_a_busy_channel_wait_for_the_batch() -> None:
    acks, socket = acker(delay=0.05, batch=4)
    for tag in range(1, 11):
        acks.delivered(tag)
    acks.ack(2)
    acks.ack(1)
    await asyncio.sleep(0.01)
    assert socket.acks() == []  # deliveries 3-10 are still out: wait a little
    acks.ack(3)
    acks.ack(4)  # a full batch: at once
    await asyncio.sleep(0)
    assert socket.acks() == [[(4, True)]]
    acks.ack(6)
    await asyncio.sleep(0.1)  # the delay passed
    assert socket.acks() == [[(6, False)]]


async def test_the_last_outstanding_delivery_is_acked_at_once() -> None:
    acks, socket = acker(delay=10.0)
    acks.delivered(1)
    acks.ack(1)
    await asyncio.sleep(0)
    assert socket.acks() == [[(1, True)]]


async def test_flush_writes_what_waits() -> None:
    acks, socket = acker(delay=10.0)
    for tag in (1, 2, 3):
        acks.delivered(tag)
    acks.ack(2)
    acks.flush()
    assert socket.acks() == [[(2, False)]]


async def test_nothing_is_written_on_a_closed_channel() -> None:
    channel = fake_channel()
    acks, socket = acker(channel)
    channel.is_closed = True
    acks.ack(1)
    await asyncio.sleep(0)
    assert socket.acks() == []


async def test_nothing_is_written_once_rabbitmq_closed_the_channel() -> None:
    channel = fake_channel()
    acks, socket = acker(channel)
    channel._close_exception = RuntimeError("PRECONDITION_FAILED - delivery acknowledgement "
                                            "timed out")  # aiormq answers close-ok next
    acks.ack(1)
    await asyncio.sleep(0)
    assert socket.acks() == []
