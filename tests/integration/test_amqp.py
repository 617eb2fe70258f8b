"""What only the RabbitMQ broker and the rpc:// backend promise: far ETAs parked in delay
queues (which follow real time), priorities scaled onto x-max-priority, exchanges, bad
messages delivered as they are, prefetch that grows with held deliveries, redeliveries
counted, and recovery from a dropped connection (cut by a TCP proxy the test runs).

Every test uses a unique queue name and deletes what it declared."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiormq
import pytest
from aiormq.abc import AbstractChannel

from aiotq import _amqp_wire as wire
from aiotq._amqp import AMQPConnection, Publisher
from aiotq.broker import amqp as amqp_broker
from aiotq.broker.amqp import MAX_DELAY_LEVEL, AMQPBroker, delay_queue
from aiotq.broker.base import BrokerContext, Consumer, Delivery, Outgoing, Route
from aiotq.clock import SystemClock
from aiotq.codecs import Codecs
from aiotq.exceptions import ImproperlyConfigured, TransportError, UnroutableError
from aiotq.message import Message
from aiotq.results.base import BackendContext
from aiotq.results.rpc import RPCBackend
from aiotq.settings import Settings
from tests.conftest import AMQP_URL, require_service

pytestmark = pytest.mark.amqp

MakeBroker = Callable[..., Awaitable[AMQPBroker]]


def message(n: int | str, priority: int | None = None, **headers: object) -> Message:
    return Message(headers={"lang": "py", "task": "tests.noop", "id": f"id-{n}", "retries": 0,
                            **headers},
                   body=b"[[], {}, {}]", content_type="application/json",
                   correlation_id=f"id-{n}", priority=priority)


#: The properties of a bare persistent message, for publishing without the broker.
PLAIN = wire.properties(content_type=None, content_encoding=None, headers={"id": "x"},
                        delivery_mode=2, priority=None, correlation_id=None, reply_to=None)


def after(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time() + seconds, dt.UTC)


def settings(**values: object) -> Settings:
    conf = Settings(worker_lease_timeout=1.0)
    conf.update(values)
    return conf


class Admin:
    """A plain connection for inspecting and deleting what a test declared."""

    def __init__(self, connection: aiormq.abc.AbstractConnection) -> None:
        self.connection = connection
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    async def count(self, queue: str) -> int | None:
        """Messages ready in ``queue``, or None when it does not exist."""
        channel = await self.connection.channel()
        try:
            declared = await channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        await channel.close()
        return declared.message_count

    async def channel(self) -> AbstractChannel:
        return await self.connection.channel()

    async def cleanup(self) -> None:
        channel = await self.connection.channel()
        for name in self.queues:
            await channel.queue_delete(name)
        for name in self.exchanges:
            await channel.exchange_delete(name)
        await channel.close()


@pytest.fixture
async def admin(queue_name: str) -> AsyncIterator[Admin]:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    connection = await aiormq.connect(AMQP_URL)
    found = Admin(connection)
    for queue in (queue_name, queue_name + "-b"):
        found.queues += [queue, queue + ".dead"]
        found.queues += [delay_queue("", queue, level) for level in range(MAX_DELAY_LEVEL + 1)]
    try:
        yield found
    finally:
        await found.cleanup()
        await connection.close()


@pytest.fixture
async def make_broker(admin: Admin) -> AsyncIterator[MakeBroker]:
    made: list[AMQPBroker] = []

    async def make(url: str = AMQP_URL, **values: object) -> AMQPBroker:
        broker = AMQPBroker(BrokerContext(url, settings(**values), SystemClock()))
        made.append(broker)
        await broker.connect()
        return broker

    yield make
    for broker in reversed(made):
        await broker.close()


async def take(consumer: Consumer, count: int, timeout: float = 10.0) -> list[Delivery]:
    """Fetch until ``count`` deliveries came (fails the test after ``timeout``)."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            got += await consumer.fetch(count - len(got), 1.0)
    return got


class Proxy:
    """A TCP proxy to RabbitMQ that the test can cut (every connection dropped, nothing
    listening) and restore on the same port, or make hold what RabbitMQ sends (confirms
    that never come)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.replies = asyncio.Event()
        self.replies.set()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self._writers |= {writer, upstream_writer}
        for source, sink, gate in ((reader, upstream_writer, None),
                                   (upstream_reader, writer, self.replies)):
            pipe = asyncio.create_task(self._pipe(source, sink, gate))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    gate: asyncio.Event | None) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if gate is not None:
                    await gate.wait()
                sink.write(data)
                await sink.drain()
        sink.close()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    running = Proxy()
    await running.start()
    try:
        yield running
    finally:
        await running.cut()


# -- far ETAs -------------------------------------------------------------------------


async def test_far_eta_waits_in_a_delay_queue_not_in_the_consumer(
        make_broker: MakeBroker, admin: Admin, queue_name: str) -> None:
    broker = await make_broker(worker_eta_horizon=60.0)
    await broker.publish(message("far"), Route(queue_name), eta=after(3600))
    await broker.publish(message("now"), Route(queue_name))
    parked = delay_queue("", queue_name, 11)  # 2048 s: the longest not past the ETA
    assert await admin.count(parked) == 1
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        [now] = await take(consumer, 1)
        assert now.message.headers["id"] == "id-now"
        await now.ack()
        assert await consumer.fetch(10, 0.5) == []
    finally:
        await consumer.close()
    assert await admin.count(queue_name) == 0
    assert await admin.count(parked) == 1
    assert await broker.purge(queue_name) == 1
    assert await admin.count(parked) == 0


@pytest.mark.slow
async def test_short_eta_comes_back_from_the_delay_queue_after_its_ttl(
        make_broker: MakeBroker, queue_name: str) -> None:
    broker = await make_broker(worker_eta_horizon=1.0)
    eta = after(2.5)
    started = time.monotonic()
    await broker.publish(message(1, eta=eta.isoformat()), Route(queue_name), eta=eta)
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        assert await consumer.fetch(10, 1.0) == []
        [back] = await take(consumer, 1)
        assert time.monotonic() - started >= 2.0  # the 2 s delay queue's TTL
        assert back.message.eta == eta  # the worker holds it for the last half second
        assert back.delivery_count == 1
        await back.ack()
    finally:
        await consumer.close()


@pytest.mark.slow
async def test_defer_parks_until_due_and_resets_the_count(
        make_broker: MakeBroker, admin: Admin, queue_name: str) -> None:
    broker = await make_broker(worker_eta_horizon=1.0)
    await broker.publish(message(1), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        [delivery] = await take(consumer, 1)
        started = time.monotonic()
        await delivery.defer(after(2.5))
        assert await admin.count(delay_queue("", queue_name, 1)) == 1
        [again] = await take(consumer, 1)
        assert time.monotonic() - started >= 2.0
        assert again.message.headers["id"] == "id-1"
        assert again.delivery_count == 1
        await again.ack()
    finally:
        await consumer.close()


# -- priorities, bad input, prefetch ---------------------------------------------------


@pytest.mark.parametrize("max_priority", [10, 255])
async def test_priority_order_with_prefetch_one(make_broker: MakeBroker, admin: Admin,
                                                queue_name: str, max_priority: int) -> None:
    broker = await make_broker(broker_transport_options={"max_priority": max_priority})
    plan = [(1, 0), (2, 200), (3, 100), (4, 255), (5, 100), (6, None), (7, 1), (8, 254)]
    await broker.publish_many([Outgoing(message(n, p), Route(queue_name)) for n, p in plan])
    await broker.publish(message("top", 255), Route(queue_name + "-b"))
    channel = await admin.channel()
    peeked = await channel.basic_get(queue_name + "-b", no_ack=True)
    assert peeked.header.properties.priority == max_priority  # 255, scaled on the wire
    await channel.close()
    consumer = await broker.consumer([queue_name], prefetch=1)
    order = []
    try:
        for _ in plan:
            [delivery] = await take(consumer, 1)
            order.append((delivery.message.headers["id"], delivery.message.priority))
            await delivery.ack()
    finally:
        await consumer.close()
    assert order == [("id-4", 255), ("id-8", 254), ("id-2", 200), ("id-3", 100),
                     ("id-5", 100), ("id-7", 1), ("id-1", 0), ("id-6", None)]


async def test_bad_messages_are_delivered_as_they_are(make_broker: MakeBroker,
                                                      queue_name: str) -> None:
    broker = await make_broker()
    await broker.publish(message("first"), Route(queue_name))  # declares the queue
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for raw in (
            aio_pika.Message(b"\x00\xff not json at all", content_type="application/x-nope"),
            aio_pika.Message(b""),
            aio_pika.Message(b"[1, 2", content_type="application/json", headers={
                "id": 42, "task": None, "eta": "not a time", "x-aiotq-deliveries": "junk",
                "x-aiotq-priority": "high", "nested": {"a": [1, "x", None]}}),
        ):
            await channel.default_exchange.publish(raw, routing_key=queue_name)
    finally:
        await connection.close()
    await broker.publish(message("last"), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        got = await take(consumer, 5)
        for delivery in got:
            assert delivery.delivery_count == 1
            await delivery.ack()
        assert [d.message.body[:4] for d in got][1:4] == [b"\x00\xff n", b"", b"[1, "]
        assert got[1].message.content_type == "application/x-nope"
        assert got[2].message.content_type == ""
        assert got[3].message.headers["eta"] == "not a time"
        assert got[-1].message.headers["id"] == "id-last"
        assert await consumer.fetch(10, 0.2) == []
    finally:
        await consumer.close()


@pytest.mark.parametrize("global_qos", [True, False])
async def test_held_deliveries_do_not_starve_due_ones(make_broker: MakeBroker,
                                                      queue_name: str, global_qos: bool
                                                      ) -> None:
    broker = await make_broker(broker_transport_options={"global_qos": global_qos})
    await broker.publish_many([Outgoing(message(n), Route(queue_name)) for n in range(3)])
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        held = [d for _ in range(3) for d in await take(consumer, 1)]  # none settled
        assert [d.message.headers["id"] for d in held] == ["id-0", "id-1", "id-2"]
        for delivery in held:
            await delivery.ack()
    finally:
        await consumer.close()


# -- settling -------------------------------------------------------------------------


async def test_release_is_not_counted_and_dead_letters_are_read_not_taken(
        make_broker: MakeBroker, admin: Admin, queue_name: str) -> None:
    broker = await make_broker()
    await broker.publish(message(1, priority=9), Route(queue_name))
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await take(consumer, 1)
        await delivery.release()
        [again] = await take(consumer, 1)
        assert again.delivery_count == 1 and again.message.priority == 9
        await again.dead_letter("poison: delivered 6 times")
    finally:
        await consumer.close()
    for _ in range(2):
        [dead] = await broker.dead_letters(queue_name)
        assert dead.reason == "poison: delivered 6 times"
        assert abs(dead.time - time.time()) < 30  # to the second: not a 32-bit float
        assert dead.message is not None and dead.message.headers["id"] == "id-1"
        assert "x-aiotq-reason" not in dead.message.headers
    assert await admin.count(queue_name + ".dead") == 1
    assert await broker.dead_letters(queue_name + "-b") == []


# -- topology -------------------------------------------------------------------------


async def test_topic_exchange_routes_by_key(make_broker: MakeBroker, admin: Admin,
                                           queue_name: str) -> None:
    exchange, other = queue_name + ".tasks", queue_name + "-b"
    admin.exchanges.append(exchange)
    channel = await admin.channel()
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    await channel.queue_declare(other, durable=True)
    await channel.queue_bind(other, exchange, routing_key="math.#")
    await channel.close()
    broker = await make_broker()
    await broker.publish(message(1), Route(queue_name, exchange, "math.add", "topic"))
    await broker.publish(message(2), Route(other, exchange, "text.upper", "topic"))
    assert await admin.count(queue_name) == 1  # bound by the route, with its key
    assert await admin.count(other) == 2  # by its own pattern and by the second route


async def test_unroutable_message_is_an_error(make_broker: MakeBroker, admin: Admin,
                                              queue_name: str) -> None:
    exchange = queue_name + ".nowhere"
    admin.exchanges.append(exchange)
    broker = await make_broker()
    connection = await broker.connection()
    await connection.declare_exchange(exchange, "direct")
    channel = await connection.publisher(0)
    with pytest.raises(UnroutableError, match="no queue is bound") as caught:
        await connection.publish(channel, b"x", PLAIN, exchange, "key")
    assert isinstance(caught.value, ImproperlyConfigured)


# -- batched publishing (aiormq internals, pinned in pyproject.toml) --------------------


async def test_one_unroutable_publish_of_a_batch_fails_alone(make_broker: MakeBroker,
                                                             admin: Admin,
                                                             queue_name: str) -> None:
    exchange = queue_name + ".nowhere"
    admin.exchanges.append(exchange)
    broker = await make_broker()
    connection = await broker.connection()
    await connection.declare_queue(queue_name)
    await connection.declare_exchange(exchange, "direct")
    publisher = await connection.publisher(0)
    targets = [("", queue_name), (exchange, "key"), ("", queue_name), (exchange, "other")]
    results = await asyncio.gather(
        *(connection.publish(publisher, b"x", PLAIN, ex, key) for ex, key in targets * 25),
        return_exceptions=True)
    for (ex, key), result in zip(targets * 25, results, strict=True):
        if ex:
            assert isinstance(result, UnroutableError) and repr(key) in str(result)
        else:
            assert result is None
    assert await admin.count(queue_name) == 50
    # Every confirm and return was matched, and nothing is left behind.
    assert not publisher._unconfirmed and not publisher._by_id
    assert publisher.number in connection.socket().reader._taps  # confirms read by aiotq


async def test_nacked_publishes_are_transport_errors(make_broker: MakeBroker, admin: Admin,
                                                     queue_name: str) -> None:
    broker = await make_broker()
    connection = await broker.connection()
    await connection.declare_queue(queue_name, {"x-max-length": 2,
                                                "x-overflow": "reject-publish"})
    publisher = await connection.publisher(0)
    results = await asyncio.gather(
        *(connection.publish(publisher, b"x", PLAIN, "", queue_name) for _ in range(5)),
        return_exceptions=True)
    assert results[:2] == [None, None]
    for result in results[2:]:
        assert isinstance(result, TransportError) and "nack" in str(result)
    await connection.publish(publisher, b"x", PLAIN, "", queue_name + "-b", mandatory=False)


async def test_publishes_in_flight_fail_when_the_connection_drops(
        make_broker: MakeBroker, proxy: Proxy, queue_name: str) -> None:
    broker = await make_broker(proxy.url)
    connection = await broker.connection()
    await connection.declare_queue(queue_name)
    publisher = await connection.publisher(0)
    proxy.replies.clear()  # written, never confirmed
    pending = [asyncio.ensure_future(connection.publish(publisher, b"x", PLAIN, "", queue_name))
               for _ in range(50)]
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in pending)
    await proxy.cut()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(result, TransportError) for result in results), results
    assert publisher.is_closed


async def test_a_channel_rabbitmq_closes_fails_its_publishes_but_not_the_connection(
        make_broker: MakeBroker, admin: Admin, queue_name: str) -> None:
    broker = await make_broker()
    connection = await broker.connection()
    await connection.declare_queue(queue_name)
    publisher = await connection.publisher(0)
    assert publisher._writer is connection.socket().writer  # frames go straight to it
    targets = [""] * 10 + [queue_name + ".missing"] + [""] * 40  # 404: channel closed
    results = await asyncio.gather(
        *(connection.publish(publisher, b"x", PLAIN, exchange, queue_name)
          for exchange in targets), return_exceptions=True)
    # Those before it reached the queue, but their confirms may die with the channel.
    assert all(result is None or isinstance(result, TransportError) for result in results)
    assert all(isinstance(result, TransportError) for result in results[10:])
    with pytest.raises(TransportError):
        await connection.publish(publisher, b"x", PLAIN, "", queue_name)
    # The close ended the tap: a channel reusing the number is aiormq's until tapped again.
    assert publisher.number not in connection.socket().reader._taps
    await connection.publish(await connection.publisher(0), b"x", PLAIN, "", queue_name)
    assert await admin.count(queue_name) == 11
    assert connection._robust is not None and connection._robust.transport is not None
    assert not connection._robust.transport.connection.is_closed


async def test_a_confirm_that_does_not_come_is_a_timeout(make_broker: MakeBroker,
                                                         proxy: Proxy, queue_name: str) -> None:
    broker = await make_broker(proxy.url, broker_transport_options={"publish_timeout": 0.3})
    connection = await broker.connection()
    await connection.declare_queue(queue_name)
    publisher = await connection.publisher(0)
    proxy.replies.clear()
    started = time.monotonic()
    results = await asyncio.gather(
        *(connection.publish(publisher, b"x", PLAIN, "", queue_name) for _ in range(3)),
        return_exceptions=True)
    assert 0.3 <= time.monotonic() - started < 2
    for result in results:
        assert isinstance(result, TransportError)
        assert isinstance(result.__cause__, TimeoutError)
    assert not publisher._unconfirmed  # the late confirms are ignored quietly
    proxy.replies.set()


async def test_a_cancelled_publish_leaves_the_batch_alone(make_broker: MakeBroker,
                                                          admin: Admin, queue_name: str) -> None:
    broker = await make_broker()
    connection = await broker.connection()
    await connection.declare_queue(queue_name)
    publisher = await connection.publisher(0)
    tasks = [asyncio.ensure_future(connection.publish(publisher, b"x", PLAIN, "", queue_name))
             for _ in range(6)]
    tasks[1].cancel()  # before the batch is written: never sent
    while len(publisher._unconfirmed) < 5:
        await asyncio.sleep(0)
    tasks[4].cancel()  # written: sent, its confirm ignored
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [isinstance(r, asyncio.CancelledError) for r in results] == [
        False, True, False, False, True, False]
    assert await admin.count(queue_name) == 5


@pytest.mark.parametrize("confirms", [True, False])
async def test_publishes_are_written_by_the_run_and_a_reply_before_its_caller_yields(
        make_broker: MakeBroker, admin: Admin, queue_name: str, confirms: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker = await make_broker()
    connection = await broker.connection()
    await connection.declare_queue(queue_name)
    publisher = await connection.publisher(0 if confirms else connection.UNCONFIRMED)
    writes: list[bytes] = []
    write = publisher._writer.write
    monkeypatch.setattr(publisher._writer, "write",
                        lambda data: (writes.append(data), write(data))[1])
    first = publisher.submit("", queue_name, True, PLAIN, b"x")
    # Without confirms (replies someone waits for) the turn's first goes at once.
    assert len(writes) == (0 if confirms else 1)
    rest = [publisher.submit("", queue_name, True, PLAIN, b"x") for _ in range(Publisher.EARLY)]
    assert len(writes) == (1 if confirms else 2)  # the turn's 16th went with those before
    await asyncio.sleep(0)
    assert len(writes) == (2 if confirms else 3)  # the 17th at the end of the turn
    await asyncio.gather(first.future, *(pending.future for pending in rest))
    async with asyncio.timeout(10):  # without confirms, written is not yet queued
        while await admin.count(queue_name) != 1 + Publisher.EARLY:
            await asyncio.sleep(0.01)


async def test_rpc_replies_do_not_wait_for_a_confirm(make_broker: MakeBroker, proxy: Proxy,
                                                     admin: Admin) -> None:
    broker = await make_broker(proxy.url)
    worker = RPCBackend(backend_context(proxy.url, broker))
    client = RPCBackend(backend_context(AMQP_URL))
    task_id = str(uuid.uuid4())
    try:
        reply_to = await client.on_task_call(task_id)
        admin.queues.append(reply_to)
        await worker.store({"task_id": task_id, "status": "STARTED", "result": None},
                           reply_to=reply_to)  # opens the worker's channel
        proxy.replies.clear()  # whatever RabbitMQ sends the worker now is held
        async with asyncio.timeout(2):
            await worker.store({"task_id": task_id, "status": "SUCCESS", "result": 1},
                               reply_to=reply_to)
        async with asyncio.timeout(10):
            while (meta := await client.get(task_id)) is None or meta["status"] != "SUCCESS":
                await asyncio.sleep(0.01)
    finally:
        proxy.replies.set()
        await client.close()
        await worker.close()


async def test_a_channel_without_confirms_that_rabbitmq_closes_is_logged(
        make_broker: MakeBroker, queue_name: str, caplog: pytest.LogCaptureFixture) -> None:
    broker = await make_broker()
    connection = await broker.connection()
    publisher = await connection.publisher(connection.UNCONFIRMED)
    with caplog.at_level(logging.WARNING, logger="aiotq.amqp"):
        # Returns once written; RabbitMQ then closes the channel (404, no such exchange).
        await connection.publish(publisher, b"x", PLAIN, queue_name + ".missing", "key",
                                 mandatory=False)
        async with asyncio.timeout(10):
            while not publisher.is_closed:
                await asyncio.sleep(0.01)
    assert "may be lost" in caplog.text and "NOT_FOUND" in caplog.text
    replacement = await connection.publisher(connection.UNCONFIRMED)
    assert replacement is not publisher and not replacement.confirms
    caplog.clear()
    await connection.close()
    assert "may be lost" not in caplog.text  # closing is no loss


# -- batched acks and the delivery tap -------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
async def test_a_gather_of_publishes_takes_turns_on_the_publishing_channels(
        make_broker: MakeBroker, queue_name: str, channels: int) -> None:
    broker = await make_broker(broker_transport_options={"publish_channels": channels})
    await asyncio.gather(*(broker.publish(message(n), Route(queue_name)) for n in range(100)))
    connection = await broker.connection()
    used = [slot for slot in range(channels) if connection._pool[slot] is not None]
    assert used == list(range(channels))  # runs of Publisher.EARLY, one channel after another
    consumer = await broker.consumer([queue_name], prefetch=100)
    try:
        got = await take(consumer, 100)
        assert sorted(d.message.headers["id"] for d in got) == sorted(
            f"id-{n}" for n in range(100))
        for delivery in got:
            await delivery.ack()
    finally:
        await consumer.close()


@pytest.mark.parametrize("tapped", [True, False])
async def test_acks_in_any_order_settle_every_delivery_once(
        make_broker: MakeBroker, admin: Admin, queue_name: str, tapped: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if not tapped:  # deliveries through aiormq and the basic_consume callback instead
        monkeypatch.setattr(AMQPConnection, "tap", lambda self, channel, **handlers: None)
    broker = await make_broker()
    await broker.publish_many([Outgoing(message(n), Route(queue_name)) for n in range(300)])
    consumer = await broker.consumer([queue_name], prefetch=50)
    try:
        channel = consumer._subscription.channel
        assert channel is not None
        taps = (await broker.connection()).socket().reader._taps
        assert (channel.number in taps) is tapped
        got = await take(consumer, 300, timeout=30)
        assert sorted(d.message.headers["id"] for d in got) == sorted(
            f"id-{n}" for n in range(300))
        assert all(d.delivery_count == 1 for d in got)
        held = got[7]
        rest = [d for d in got if d is not held]
        random.Random(3).shuffle(rest)
        for start in range(0, len(rest), 37):
            for delivery in rest[start:start + 37]:
                await delivery.ack()
                await delivery.ack()  # twice: still acked once
            await asyncio.sleep(0.01)
        await held.release()
        [back] = await take(consumer, 1)
        assert back.message.headers["id"] == held.message.headers["id"]
        assert back.delivery_count == 1
        await back.ack()
        await asyncio.sleep(0.1)
        assert not channel.is_closed  # no unknown delivery tag
    finally:
        await consumer.close()
    assert await admin.count(queue_name) == 0  # nothing came back unacked


async def test_a_body_larger_than_a_frame_travels_whole(make_broker: MakeBroker,
                                                        queue_name: str) -> None:
    broker = await make_broker()
    big = Message(headers={"task": "tests.noop", "id": "big"}, body=bytes(range(256)) * 1500,
                  content_type="application/octet-stream")  # 384 KB: three body frames
    await broker.publish_many([Outgoing(m, Route(queue_name))
                               for m in (message(1), big, message(2))])
    consumer = await broker.consumer([queue_name], prefetch=10)
    try:
        got = await take(consumer, 3)
        assert [d.message.body for d in got] == [message(1).body, big.body, message(2).body]
        for delivery in got:
            await delivery.ack()
    finally:
        await consumer.close()


async def test_acks_still_waiting_are_written_before_the_consumer_closes(
        make_broker: MakeBroker, admin: Admin, queue_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker = await make_broker()
    await broker.publish_many([Outgoing(message(n), Route(queue_name)) for n in range(20)])
    consumer = await broker.consumer([queue_name], prefetch=20)
    got = await take(consumer, 20)
    for delivery in got[1:]:
        await delivery.ack()  # got[0] is not settled, so these wait for the batch

    async def cannot_release(self: amqp_broker.AMQPDelivery) -> None:
        raise TransportError("RabbitMQ is gone for a moment")

    monkeypatch.setattr(amqp_broker.AMQPDelivery, "release", cannot_release)
    await consumer.close()  # got[0] stays unsettled: the acks must not wait for it
    assert await admin.count(queue_name) == 1  # got[0], requeued with the channel


async def test_deleted_queue_is_declared_again(make_broker: MakeBroker, admin: Admin,
                                               queue_name: str) -> None:
    broker = await make_broker()
    await broker.publish(message(1), Route(queue_name))
    channel = await admin.channel()
    await channel.queue_delete(queue_name)
    await channel.close()
    await broker.publish(message(2), Route(queue_name))
    assert await admin.count(queue_name) == 1


async def test_queue_declared_by_celery_is_used_as_it_is(
        make_broker: MakeBroker, admin: Admin, queue_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    channel = await admin.channel()
    await channel.queue_declare(queue_name, durable=True)  # as Celery: no x-max-priority
    await channel.close()
    broker = await make_broker()
    with caplog.at_level(logging.WARNING, "aiotq.amqp"):
        await broker.publish(message(1), Route(queue_name))
    assert "exists with other arguments" in caplog.text
    consumer = await broker.consumer([queue_name], prefetch=1)
    try:
        [delivery] = await take(consumer, 1)
        await delivery.ack()
    finally:
        await consumer.close()


async def declared_with(admin: Admin, queue: str, arguments: dict[str, object]) -> bool:
    """Whether ``queue`` has exactly ``arguments``: RabbitMQ refuses a declaration whose
    arguments differ from the queue's."""
    channel = await admin.channel()
    try:
        await channel.queue_declare(queue, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed:
        return False
    await channel.close()
    return True


async def test_queues_are_declared_with_the_default_arguments_for_the_server(
        make_broker: MakeBroker, admin: Admin, queue_name: str) -> None:
    broker = await make_broker()
    await broker.publish(message(1), Route(queue_name))
    await broker.publish(message(2), Route(queue_name), eta=after(3600))
    default = amqp_broker.default_queue_arguments((await broker.connection()).version)
    assert await broker.task_queue_arguments() == {**default, "x-max-priority": 10}
    assert await declared_with(admin, queue_name, {**default, "x-max-priority": 10})
    level = amqp_broker.delay_level(3600, Settings().worker_eta_horizon)
    assert level is not None
    assert await declared_with(admin, delay_queue("", queue_name, level), {
        **default, "x-message-ttl": 2 ** level * 1000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue_name})


@pytest.mark.parametrize(("version", "arguments"), [
    ((3, 5, 7), {}),
    ((3, 10, 8), {"x-queue-mode": "lazy"}),
    ((3, 11, 28), {"x-queue-mode": "lazy"}),
    ((3, 12, 0), {"x-queue-version": 2}),
    ((3, 13, 1), {}),
    ((4, 1, 0), {}),
    ((), {}),
])
def test_default_queue_arguments_follow_the_server(version: tuple[int, ...],
                                                   arguments: dict[str, object]) -> None:
    assert amqp_broker.default_queue_arguments(version) == arguments


async def test_queue_arguments_replace_the_default(make_broker: MakeBroker, admin: Admin,
                                                   queue_name: str) -> None:
    version_2 = {"x-queue-version": 2}
    broker = await make_broker(broker_transport_options={
        "max_priority": None, "queue_arguments": version_2})
    await broker.publish(message(1), Route(queue_name))
    assert await broker.task_queue_arguments() == version_2
    assert await declared_with(admin, queue_name, version_2)
    plain = await make_broker(broker_transport_options={"max_priority": None,
                                                        "queue_arguments": {}})
    await plain.publish(message(2), Route(queue_name + "-b"))
    assert await declared_with(admin, queue_name + "-b", {})


@pytest.mark.parametrize("value", [["x-queue-mode"], {1: 2}, {"x-max-priority": 5},
                                   {"x-message-ttl": 1000}])
def test_bad_queue_arguments_are_refused(value: object) -> None:
    with pytest.raises(ImproperlyConfigured, match="queue_arguments"):
        AMQPBroker(BrokerContext(AMQP_URL, settings(
            broker_transport_options={"queue_arguments": value}), SystemClock()))


# -- connection loss ------------------------------------------------------------------


@pytest.mark.slow
async def test_consumer_resumes_after_a_connection_loss_and_nothing_is_lost(
        make_broker: MakeBroker, proxy: Proxy, queue_name: str) -> None:
    direct = await make_broker()
    through = await make_broker(proxy.url, broker_transport_options={"reconnect_interval": 0.2})
    ids = {f"id-{n}" for n in range(10)}
    await direct.publish_many([Outgoing(message(n), Route(queue_name)) for n in range(10)])
    consumer = await through.consumer([queue_name], prefetch=3)
    try:
        first, *held = await take(consumer, 3)
        await first.ack()
        await asyncio.sleep(0.1)  # the ack reaches RabbitMQ before the cut
        await proxy.cut()
        with pytest.raises(TransportError):
            await through.publish(message("during"), Route(queue_name))
        for delivery in held:
            await delivery.ack()  # gone with the channel: a no-op, RabbitMQ requeued it
        await proxy.start()
        rest = await take(consumer, 9, timeout=20)
        assert {d.message.headers["id"] for d in rest} | {first.message.headers["id"]} == ids
        counts = {d.message.headers["id"]: d.delivery_count for d in rest}
        # Held and prefetched ones were redelivered, and counted; the rest are first tries.
        assert all(counts[d.message.headers["id"]] == 2 for d in held)
        assert set(counts.values()) == {1, 2}
        for delivery in rest:
            await delivery.ack()
        await through.publish(message("after"), Route(queue_name))
        [after_loss] = await take(consumer, 1)
        assert after_loss.message.headers["id"] == "id-after"
        await after_loss.ack()
    finally:
        await consumer.close()


@pytest.mark.slow
async def test_a_consumer_busy_for_longer_than_the_heartbeat_grace_keeps_its_connection(
        make_broker: MakeBroker, queue_name: str) -> None:
    # aiotq's reader takes every frame of a busy consumer, and RabbitMQ sends no heartbeat
    # while it sends deliveries: aiormq must still hear from the connection, or after
    # (heartbeat + 1) * 3 s it takes it for stuck and drops it.
    publisher = await make_broker()
    worker = await make_broker(AMQP_URL + "?heartbeat=1")
    await publisher.publish(message(0), Route(queue_name))
    consumer = await worker.consumer([queue_name], prefetch=10)
    connection = await worker.connection()
    assert connection._robust is not None and connection._robust.transport is not None
    first = connection._robust.transport.connection
    try:
        started = time.monotonic()
        while time.monotonic() - started < 7:
            await publisher.publish(message(1), Route(queue_name))
            for delivery in await consumer.fetch(10, 0.1):
                await delivery.ack()
            await asyncio.sleep(0.1)
        assert connection._robust.transport.connection is first and not first.is_closed
    finally:
        await consumer.close()


# -- rpc:// -----------------------------------------------------------------------------


def backend_context(broker_url: str, broker: AMQPBroker | None = None, **values: object
                    ) -> BackendContext:
    conf = settings(broker_url=broker_url, result_backend="rpc://", **values)
    return BackendContext("rpc://", conf, Codecs(), SystemClock(), {}, broker)


async def wait_for_state(backend: RPCBackend, task_id: str, timeout: float = 10.0) -> str:
    async with asyncio.timeout(timeout):
        feed = backend.watch([task_id])
        meta = await anext(feed)
        await feed.aclose()  # type: ignore[attr-defined]
    return str(meta["status"])


@pytest.mark.slow
async def test_rpc_reply_queue_outlives_a_connection_loss(proxy: Proxy, admin: Admin) -> None:
    client = RPCBackend(backend_context(proxy.url,
                                        broker_transport_options={"reconnect_interval": 0.2}))
    worker = RPCBackend(backend_context(AMQP_URL))
    task_id = str(uuid.uuid4())
    try:
        reply_to = await client.on_task_call(task_id)
        admin.queues.append(reply_to)
        await proxy.cut()
        await worker.store({"task_id": task_id, "status": "SUCCESS", "result": 1},
                           reply_to=reply_to)
        await proxy.start()
        assert await wait_for_state(client, task_id, timeout=20) == "SUCCESS"
    finally:
        await client.close()
        await worker.close()
    assert await admin.count(reply_to) is None  # close() deleted it


async def test_rpc_needs_an_amqp_broker() -> None:
    backend = RPCBackend(backend_context("redis://127.0.0.1:6379/0"))
    with pytest.raises(ImproperlyConfigured, match="needs an amqp:// broker"):
        await backend.connect()
