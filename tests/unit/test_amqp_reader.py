"""The connection's reader takes the frames of tapped channels (deliveries, returns,
confirms) and hands every other frame to aiormq unchanged, however the socket cuts them."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import pamqp.frame
from pamqp.body import ContentBody
from pamqp.commands import Basic, Channel, Connection
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from aiotq import _amqp_wire as wire
from aiotq._amqp import _Reader
from tests.unit.test_amqp_wire import TABLES, celery_headers, random_tables

PROPERTIES = Basic.Properties(
    content_type="application/json", content_encoding="utf-8", headers=celery_headers(),
    delivery_mode=2, priority=4, correlation_id="c-1", reply_to="reply", message_id="m-1",
    timestamp=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), app_id="app")


def deliver(tag: int, consumer_tag: str = "aiotq.x", exchange: str = "",
            routing_key: str = "q", redelivered: bool = False) -> Basic.Deliver:
    return Basic.Deliver(consumer_tag=consumer_tag, delivery_tag=tag, redelivered=redelivered,
                         exchange=exchange, routing_key=routing_key)


def frames(*items: tuple[Any, int]) -> bytes:
    return b"".join(pamqp.frame.marshal(frame, channel) for frame, channel in items)


def message(method: Any, channel: int, body: bytes, frame_max: int = 4096,
            properties: Basic.Properties = PROPERTIES) -> bytes:
    chunk = frame_max - 8
    return frames((method, channel),
                  (ContentHeader(body_size=len(body), properties=properties), channel),
                  *((ContentBody(body[i:i + chunk]), channel) for i in range(0, len(body), chunk)))


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[Any, ...]] = []

    def delivery(self, deliver: wire.Deliver, props: wire.Props, body: bytes) -> None:
        self.got.append(("deliver", deliver, props, body))

    def returned(self, returned: wire.Return, props: wire.Props, body: bytes) -> None:
        self.got.append(("return", returned, props, body))

    def confirm(self, confirm: wire.Confirm) -> None:
        self.got.append(("confirm", confirm))


def reader_for(recorder: Recorder) -> _Reader:
    reader = _Reader(2 ** 16, asyncio.get_running_loop())
    reader.tap(1, on_delivery=recorder.delivery)
    reader.tap(2, on_return=recorder.returned, on_confirm=recorder.confirm)
    return reader


async def passed_on(reader: _Reader, size: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(size), 1) if size else b""


def feed(reader: _Reader, data: bytes, rng: random.Random | None) -> None:
    """Feed ``data`` as the socket might: whole, or cut anywhere."""
    if rng is None:
        reader.feed_data(data)
        return
    position = 0
    while position < len(data):
        size = rng.choice([1, 2, 7, 8, 100, 4096, 70000])
        reader.feed_data(data[position:position + size])
        position += size


STREAM_CUTS = [None, *[random.Random(seed) for seed in range(8)]]


async def test_tapped_frames_are_taken_and_the_rest_passes_on_unchanged() -> None:
    body = bytes(range(256)) * 40  # three body frames at frame_max 4096
    others = [
        frames((Connection.Start(), 0)),
        frames((Basic.ConsumeOk(consumer_tag="aiotq.x"), 1)),
        message(deliver(5, "other"), 3, b"not ours"),
        frames((Heartbeat(), 0)),
        frames((Basic.Ack(delivery_tag=9), 1)),  # channel 1 takes no confirms
        message(Basic.GetOk(delivery_tag=1, exchange="", routing_key="q", message_count=0), 2,
                b"get-ok"),  # channel 2 takes returns and confirms, not this
    ]
    ours = [
        message(deliver(1, exchange="tasks", routing_key="math.add", redelivered=True), 1, body),
        frames((Basic.Ack(delivery_tag=3, multiple=True), 2),
               (Basic.Nack(delivery_tag=4), 2)),
        message(Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="x",
                             routing_key="k"), 2, b""),
        message(deliver(2), 1, b"[[], {}, {}]"),
    ]
    stream = b"".join(part for pair in zip(others, ours + [b""] * 2, strict=True)
                      for part in pair)
    for cuts in STREAM_CUTS:
        recorder = Recorder()
        reader = reader_for(recorder)
        feed(reader, stream, cuts)
        assert await passed_on(reader, sum(map(len, others))) == b"".join(others)
        kinds = [item[0] for item in recorder.got]
        assert kinds == ["deliver", "confirm", "confirm", "return", "deliver"]
        _, delivered, props, got_body = recorder.got[0]
        assert delivered == wire.Deliver("aiotq.x", 1, True, "tasks", "math.add")
        assert got_body == body
        for name in Basic.Properties.__slots__:
            if name != "cluster_id":
                assert getattr(props, name) == getattr(PROPERTIES, name), name
        assert recorder.got[1][1] == wire.Confirm(3, True, True)
        assert recorder.got[2][1] == wire.Confirm(4, False, False)
        assert recorder.got[3][1:] == (wire.Return(312, "NO_ROUTE", "x", "k"),
                                       recorder.got[3][2], b"")
        assert recorder.got[4][3] == b"[[], {}, {}]"


async def test_properties_decode_as_pamqp_decodes_them() -> None:
    for headers in [*TABLES, *random_tables(200)]:
        properties = Basic.Properties(headers=headers, delivery_mode=1)
        recorder = Recorder()
        reader = reader_for(recorder)
        try:
            data = message(deliver(1), 1, b"x", properties=properties)
        except (TypeError, OverflowError):
            continue  # pamqp cannot encode it either
        reader.feed_data(data)
        expected = ContentHeader()
        expected.unmarshal(pamqp.frame.marshal(ContentHeader(
            body_size=1, properties=properties), 1)[7:-1])
        assert recorder.got[0][2].headers == expected.properties.headers


async def test_a_closed_channel_is_tapped_no_more() -> None:
    recorder = Recorder()
    reader = reader_for(recorder)
    close = frames((Channel.Close(reply_code=406, reply_text="PRECONDITION_FAILED",
                                  class_id=60, method_id=80), 1))
    reused = message(deliver(1, "someone"), 1, b"theirs")
    reader.feed_data(close + reused)
    assert await passed_on(reader, len(close + reused)) == close + reused
    assert recorder.got == []
    reader.feed_data(frames((Channel.CloseOk(), 2)))
    assert set(reader._taps) == set()


async def test_undecodable_properties_deliver_the_message_without_them() -> None:
    recorder = Recorder()
    reader = reader_for(recorder)
    header = bytearray(pamqp.frame.marshal(ContentHeader(body_size=1, properties=PROPERTIES),
                                           1))
    # After the frame's head, class, weight, size, flags, content type and encoding: the
    # headers table's length, made far too long.
    header[7 + 12 + 2 + (1 + 16) + (1 + 5)] = 0xFF
    reader.feed_data(frames((deliver(1), 1)) + bytes(header) + frames((ContentBody(b"x"), 1)))
    assert recorder.got[0][2].headers is None and recorder.got[0][3] == b"x"


async def test_what_is_not_amqp_frames_goes_to_aiormq_as_it_is() -> None:
    reader = _Reader(2 ** 16, asyncio.get_running_loop())
    reader.feed_data(b"AMQP\x00\x00\x09\x01")  # the server refuses our protocol version
    assert await passed_on(reader, 8) == b"AMQP\x00\x00\x09\x01"
    recorder = Recorder()
    reader = reader_for(recorder)
    broken = frames((Basic.Ack(delivery_tag=1), 2))[:-1] + b"\x00" + b"rest"
    reader.feed_data(broken)
    assert await passed_on(reader, len(broken)) == broken and recorder.got == []


async def test_aiormq_hears_from_a_connection_whose_every_frame_aiotq_takes() -> None:
    recorder = Recorder()
    reader = reader_for(recorder)
    reader.KEEPALIVE = 0.0  # aiormq would take a minute of silence for a dead connection
    reader.feed_data(frames((Basic.Ack(delivery_tag=1), 2)))
    assert recorder.got == [("confirm", wire.Confirm(1, False, True))]
    assert await passed_on(reader, 8) == frames((Heartbeat(), 0))


async def test_a_frame_cut_short_by_the_end_of_the_stream_still_reaches_aiormq() -> None:
    reader = reader_for(Recorder())
    start = frames((Connection.Start(), 0))
    reader.feed_data(start[:10])
    reader.feed_eof()
    assert await reader.read() == start[:10]
