"""RabbitMQ broker (``amqp://``, ``amqps://``), on aio-pika's robust connection.

Messages travel as Celery's protocol v2, natively: the message's headers are the AMQP
headers, its properties the AMQP properties, its body the body, so Celery 5 workers and
clients read and write the same messages. docs/brokers/amqp.md describes the topology
(priority queues, delay queues for far ETAs, dead-letter queues) and the settings.

Headers aiotq adds, and strips again on delivery:

* ``x-aiotq-deliveries``: how many earlier deliveries of the message ended unsettled (a
  crashed worker, a dropped connection). A classic queue only flags a redelivery, it does
  not count it, so the consumer republishes a redelivered message to its queue with this
  count + 1 (confirmed), acks the original, and delivers the copy: ``delivery_count`` is
  the count + 1. A quorum queue's own ``x-delivery-count`` is used when present.
* ``x-aiotq-priority``: the 0-255 priority, when the AMQP priority had to be scaled onto
  the queue's ``x-max-priority``.
* ``x-aiotq-reason``, ``x-aiotq-dead-at``: why and when a dead letter was set aside.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import heapq
import itertools
import logging
import math
import secrets
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, cast

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic

from .. import _amqp_wire as wire
from .._amqp import (
    ENCODE_ERRORS,
    TRANSPORT_ERRORS,
    Acker,
    AMQPConnection,
    Arguments,
    Properties,
    Publisher,
    Subscription,
    transport_error,
)
from ..exceptions import AiotqError, EncodeError, ImproperlyConfigured, UnroutableError
from ..message import Message
from .base import BrokerContext, DeadLetter, Delivery, Outgoing, Producer, Route

logger = logging.getLogger("aiotq.broker.amqp")

DELIVERIES = "x-aiotq-deliveries"
PRIORITY = "x-aiotq-priority"
REASON = "x-aiotq-reason"
DEAD_AT = "x-aiotq-dead-at"
QUORUM_COUNT = "x-delivery-count"

DEFAULT_MAX_PRIORITY = 10
#: Queue arguments aiotq decides itself, per queue.
OWNED_ARGUMENTS = frozenset({"x-max-priority", "x-message-ttl", "x-dead-letter-exchange",
                             "x-dead-letter-routing-key", "x-max-length"})
#: 2**22 s (48.5 days) keeps a delay queue's x-message-ttl under RabbitMQ's 2**32 - 1 ms.
MAX_DELAY_LEVEL = 22
MAX_PREFETCH = 65535
DEAD_LETTER_LIMIT = 10_000


def wire_priority(priority: int | None, max_priority: int | None) -> int | None:
    """The AMQP priority for a 0-255 priority: scaled onto 0..max_priority, order kept
    (0 stays 0, anything above 0 stays above it)."""
    if priority is None:
        return None
    clamped = min(max(int(priority), 0), 255)
    if max_priority is None or max_priority >= 255:
        return clamped
    return -(-clamped * max_priority // 255)


def delay_level(ahead: float, horizon: float) -> int | None:
    """Which delay queue parks a message due in ``ahead`` seconds: the shortest (power of
    two seconds) that brings it back within the worker's ``horizon``, else the longest that
    does not pass its ETA (it then comes back to be parked again). None under a second."""
    if ahead < 1:
        return None
    longest = min(int(ahead).bit_length() - 1, MAX_DELAY_LEVEL)
    excess = ahead - horizon
    if excess <= 0:
        return longest
    shortest = 0 if excess <= 1 else (math.ceil(excess) - 1).bit_length()
    return min(shortest, longest)


def delay_queue(exchange: str, routing_key: str, level: int) -> str:
    target = f"{exchange}:{routing_key}" if exchange else routing_key
    return f"{target}.delay.{2 ** level}s"


def dead_queue(queue: str) -> str:
    return f"{queue}.dead"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def to_message(props: wire.Props | Basic.Properties, body: bytes
               ) -> tuple[Message, int, bool]:
    """The message of a delivery, how many earlier deliveries ended unsettled, and whether
    RabbitMQ counted them itself (a quorum queue). Never raises."""
    headers = dict(props.headers) if props.headers else {}
    native = headers.pop(QUORUM_COUNT, None)
    earlier = _count(headers.pop(DELIVERIES, 0)) + _count(native)
    original = headers.pop(PRIORITY, None)
    message = Message(
        headers=headers,
        body=body,
        content_type=props.content_type or "",
        content_encoding=props.content_encoding or "utf-8",
        correlation_id=props.correlation_id or "",
        reply_to=props.reply_to or None,
        priority=original if isinstance(original, int) else props.priority,
        delivery_mode=props.delivery_mode or 2,
    )
    return message, earlier, native is not None


def _clamp_prefetch(count: int) -> int:
    return min(max(count, 1), MAX_PREFETCH)


class AMQPDelivery:
    """A message delivered on a consumer's channel. Settling it after that channel is gone
    does nothing: RabbitMQ has put the message back in its queue already."""

    __slots__ = ("_acker", "_consumer", "_settled", "_tag", "delivery_count", "message",
                 "queue")

    def __init__(self, consumer: AMQPConsumer, acker: Acker, tag: int, queue: str,
                 message: Message, delivery_count: int) -> None:
        self._consumer = consumer
        self._acker = acker
        self._tag = tag
        self._settled = False
        self.queue = queue
        self.message = message
        self.delivery_count = delivery_count

    def _live(self) -> bool:
        return not self._settled and not self._acker.channel.is_closed

    async def ack(self) -> None:
        """Acked with the other acks of this event-loop turn (see :class:`Acker`)."""
        if self._settled:
            return
        self._settled = True
        self._consumer._outstanding.discard(self)
        if not self._acker.channel.is_closed:
            self._acker.ack(self._tag)

    async def release(self) -> None:
        # Republished rather than requeued: a requeue sets ``redelivered``, which counts as
        # a failed delivery (see the module docstring).
        if self._live():
            await self._forward("", self.queue, self.delivery_count - 1)

    async def defer(self, eta: dt.datetime) -> None:
        if not self._live():
            return
        broker = self._consumer._broker
        level = delay_level(eta.timestamp() - broker._clock.time(),
                            broker._settings.worker_eta_horizon)
        key = self.queue if level is None else await broker._delay_queue("", self.queue, level)
        await self._forward("", key, 0)

    async def dead_letter(self, reason: str) -> None:
        if not self._live():
            return
        broker = self._consumer._broker
        key = await broker._dead_queue(self.queue)
        # In milliseconds as an int: AMQP tables carry Python floats as 32-bit floats.
        dead_at = int(broker._clock.time() * 1000)
        await self._forward("", key, 0, {REASON: reason, DEAD_AT: dead_at})

    async def _forward(self, exchange: str, key: str, deliveries: int,
                       extra: Arguments | None = None) -> None:
        """Publish the message there (confirmed), then ack this delivery."""
        await self._consumer._broker._send(self.message, exchange, key, deliveries, extra)
        await self.ack()


class AMQPConsumer:
    """Deliveries from one channel consuming ``queues``.

    RabbitMQ pushes into a buffer ordered by priority; ``fetch`` takes from it. The
    channel's prefetch is kept at the deliveries handed out and not yet settled plus twice
    the ``limit`` asked for: held ETA messages never use up what due ones need, and the
    next fetch finds a batch waiting instead of a pipe RabbitMQ only refills as acks arrive.
    """

    def __init__(self, broker: AMQPBroker, queues: Sequence[str], prefetch: int,
                 global_qos: bool) -> None:
        self._broker = broker
        self._queues = list(dict.fromkeys(queues))
        self._prefetch = _clamp_prefetch(prefetch)
        self._global_qos = global_qos
        self._ready: list[tuple[int, int, AMQPDelivery]] = []
        self._seq = itertools.count()
        self._arrived = asyncio.Event()
        self._outstanding: set[AMQPDelivery] = set()
        self._tags: dict[str, str] = {}
        #: Every consumer tag of the current channel, also those cancelled since.
        self._queue_of: dict[str, str] = {}
        self._acker: Acker | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._subscription = Subscription(broker._conn, self._setup, self._on_lost)

    async def start(self) -> None:
        await self._subscription.open()

    async def _setup(self, channel: AbstractChannel) -> None:
        self._tags = {}
        self._queue_of = {}
        conn = self._broker._conn
        self._acker = Acker(channel, conn.socket().writer)
        conn.tap(channel, on_delivery=self._on_delivery)
        try:
            await channel.basic_qos(prefetch_count=self._prefetch, global_=self._global_qos)
            channel.on_consumer_cancel_callbacks.add(self._on_cancelled)
            for queue in self._queues:
                await self._broker._ensure_queue(queue)
                await self._consume(channel, queue)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(f"consuming {self._queues}", exc) from exc

    async def _consume(self, channel: AbstractChannel, queue: str) -> None:
        # Our own tag, known before the first delivery (which may come before consume-ok).
        tag = f"aiotq.{secrets.token_hex(8)}"
        self._queue_of[tag] = queue
        await channel.basic_consume(queue, self._on_message, consumer_tag=tag,
                                    arguments=self._broker._consumer_arguments)
        self._tags[tag] = queue

    def _on_lost(self) -> None:
        self._ready.clear()
        self._outstanding.clear()

    def _on_cancelled(self, frame: Basic.Cancel) -> None:
        channel = self._subscription.channel
        if self._closed or channel is None or frame.consumer_tag not in self._tags:
            return
        logger.warning("RabbitMQ stopped our consumer of %r (queue deleted?); declaring it "
                       "and consuming again", self._tags[frame.consumer_tag])
        self._broker._conn.forget()
        self._spawn(channel.close())

    async def _on_message(self, raw: DeliveredMessage) -> None:
        """aiormq's callback, for deliveries the tap did not take (see AMQPConnection.tap)."""
        acker = self._acker
        if acker is not None and raw.channel is acker.channel:
            frame = cast(Basic.Deliver, raw.delivery)
            deliver = wire.Deliver(cast(str, frame.consumer_tag), cast(int, frame.delivery_tag),
                                   bool(frame.redelivered), frame.exchange or "",
                                   frame.routing_key or "")
            self._on_delivery(deliver, raw.header.properties, raw.body)

    def _on_delivery(self, frame: wire.Deliver, props: wire.Props | Basic.Properties,
                     body: bytes) -> None:
        acker = self._acker
        tag = frame.delivery_tag
        queue = self._queue_of.get(frame.consumer_tag)
        if acker is None or queue is None:
            return  # not ours (any more): RabbitMQ requeues it with the channel
        acker.delivered(tag)
        message, earlier, counted = to_message(props, body)
        priority = props.priority or 0
        if frame.redelivered and not counted:
            self._spawn(self._recount(acker, tag, queue, message, earlier, priority))
            return
        self._push(AMQPDelivery(self, acker, tag, queue, message, earlier + 1), priority)

    def _push(self, delivery: AMQPDelivery, priority: int) -> None:
        heapq.heappush(self._ready, (-priority, next(self._seq), delivery))
        self._arrived.set()

    async def _recount(self, acker: Acker, tag: int, queue: str, message: Message,
                       earlier: int, priority: int) -> None:
        """Republish a redelivered message with its count + 1, then ack the original."""
        if acker.channel.is_closed:
            return
        try:
            await self._broker._send(message, "", queue, earlier + 1)
        except AiotqError as exc:
            logger.warning("cannot count the redelivery of message %s (%s); delivering it "
                           "as it is", message.task_id or "?", exc)
            self._push(AMQPDelivery(self, acker, tag, queue, message, earlier + 2), priority)
            return
        if not acker.channel.is_closed:
            acker.ack(tag)

    async def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        if limit <= 0 or self._closed:
            return []
        await self._fit_prefetch(limit)
        if not self._ready:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not self._ready:
                        self._arrived.clear()
                        await self._arrived.wait()
        out: list[Delivery] = []
        ready = self._ready
        while ready and len(out) < limit:
            delivery = heapq.heappop(ready)[2]
            if not delivery._acker.channel.is_closed:
                self._outstanding.add(delivery)
                out.append(delivery)
        return out

    async def _fit_prefetch(self, limit: int) -> None:
        want = _clamp_prefetch(len(self._outstanding) + 2 * limit)
        current = self._prefetch
        # Shrinking lags (only below half) so a worker's steady state costs no round trips.
        if want == current or want < current <= 2 * want:
            return
        self._prefetch = want
        channel = self._subscription.channel
        if channel is None or channel.is_closed:
            return  # the next channel starts with it
        try:
            await channel.basic_qos(prefetch_count=want, global_=self._global_qos)
            if not self._global_qos:
                await self._consume_again(channel)
        except TRANSPORT_ERRORS as exc:
            logger.debug("prefetch not changed (%r); the next channel will have it", exc)

    async def _consume_again(self, channel: AbstractChannel) -> None:
        # A per-consumer prefetch only applies to consumers started after it.
        for tag, queue in list(self._tags.items()):
            await channel.basic_cancel(tag)
            del self._tags[tag]
            await self._consume(channel, queue)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Stop consuming; republish every delivery not settled, uncounted."""
        if self._closed:
            return
        self._closed = True
        channel = self._subscription.channel
        if channel is not None and not channel.is_closed:
            for tag in list(self._tags):
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    await channel.basic_cancel(tag)
            await asyncio.sleep(0)  # deliveries that came before the cancel-ok land first
            await asyncio.gather(*self._background, return_exceptions=True)
            self._outstanding.update(item[2] for item in self._ready)
            self._ready.clear()
            await asyncio.gather(*(d.release() for d in list(self._outstanding)),
                                 return_exceptions=True)
        if self._acker is not None:
            self._acker.flush()  # before the channel closes, or they are requeued
        await self._subscription.close()
        for task in list(self._background):
            task.cancel()
        self._broker._consumers.discard(self)


class _ChannelProducer:
    """Publishes through one channel of the pool (``broker.producer()``)."""

    def __init__(self, broker: AMQPBroker, slot: int) -> None:
        self._broker = broker
        self._slot = slot

    async def publish(self, message: Message, route: Route, *, eta: dt.datetime | None = None
                      ) -> None:
        await self._broker._publish(self._slot, message, route, eta)

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        await self._broker._publish_many(self._slot, items)


class AMQPBroker:
    """``amqp://`` / ``amqps://`` broker; see the module docstring and docs/brokers/amqp.md.

    ``broker_transport_options``: ``max_priority`` (x-max-priority of declared queues,
    default 10, None for none), ``queue_arguments`` (more arguments of every queue it
    declares; default: what :func:`default_queue_arguments` gives for the server),
    ``publish_channels`` (1), ``publish_timeout`` (30 s), ``connect_timeout`` (10 s),
    ``reconnect_interval`` (aio-pika's, 5 s), ``dead_letter_max_length`` (10,000),
    ``global_qos`` (default: on RabbitMQ < 4.3),
    ``consumer_timeout`` (seconds; default: the server's), ``reply_queue_expires`` (rpc://,
    60 s).
    """

    def __init__(self, context: BrokerContext) -> None:
        self._settings = context.settings
        self._clock = context.clock
        options = dict(context.settings.broker_transport_options)
        self._options = options
        self._max_priority = _max_priority(options.get("max_priority", DEFAULT_MAX_PRIORITY))
        self._extra_arguments = _checked_arguments(options.get("queue_arguments"))
        self._dead_limit = options.get("dead_letter_max_length", DEAD_LETTER_LIMIT)
        # RabbitMQ 3.11.15+ honours it per consumer (older ones ignore it): a task may run
        # longer than the server's consumer_timeout (30 min) without losing its channel.
        timeout = options.get("consumer_timeout")
        self._consumer_arguments: Arguments | None = (
            {"x-consumer-timeout": int(timeout * 1000)} if timeout else None
        )
        self._conn = AMQPConnection(context.url, options)
        self._routes: set[Route] = set()
        self._routes_generation = -1
        self._consumers: set[AMQPConsumer] = set()

    async def connect(self) -> None:
        await self._conn.connect()

    async def connection(self) -> AMQPConnection:
        """The connection, connected (the rpc:// backend shares it)."""
        await self._conn.connect()
        return self._conn

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        await self._conn.close()

    # -- publishing --

    async def publish(self, message: Message, route: Route, *, eta: dt.datetime | None = None
                      ) -> None:
        await self._publish(self._conn.pick(), message, route, eta)

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        await self._publish_many(self._conn.pick(), items)

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[Producer]:
        yield _ChannelProducer(self, self._conn.pick())

    async def _publish(self, slot: int, message: Message, route: Route,
                       eta: dt.datetime | None) -> None:
        exchange, key = await self._destination(route, eta)
        publisher = await self._conn.publisher(slot)
        await self._publish_on(publisher, message, route, eta, exchange, key)

    async def _publish_many(self, slot: int, items: Sequence[Outgoing]) -> None:
        # Declarations first, then every publish pipelined on one channel, in order.
        targets = [await self._destination(item.route, item.eta) for item in items]
        publisher = await self._conn.publisher(slot)
        results = await asyncio.gather(
            *(self._publish_on(publisher, item.message, item.route, item.eta, *target)
              for item, target in zip(items, targets, strict=True)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _publish_on(self, publisher: Publisher, message: Message, route: Route,
                          eta: dt.datetime | None, exchange: str, key: str) -> None:
        properties = self._properties(message)
        try:
            await self._conn.publish(publisher, message.body, properties, exchange, key)
        except UnroutableError:
            # A queue or binding was deleted behind our cached declarations: declare again.
            self._conn.forget()
            exchange, key = await self._destination(route, eta)
            await self._conn.publish(publisher, message.body, properties, exchange, key)

    async def _send(self, message: Message, exchange: str, key: str, deliveries: int = 0,
                    extra: Arguments | None = None) -> None:
        """Republish a delivered message (release, defer, dead letter, redelivery count)."""
        headers = dict(extra or {})
        if deliveries:
            headers[DELIVERIES] = deliveries
        publisher = await self._conn.publisher(self._conn.pick())
        await self._conn.publish(publisher, message.body, self._properties(message, headers),
                                 exchange, key)

    def _properties(self, message: Message, extra: Arguments | None = None) -> Properties:
        headers = message.headers
        priority = wire_priority(message.priority, self._max_priority)
        if priority != message.priority:
            headers = {**headers, PRIORITY: message.priority}
        if extra:
            headers = {**headers, **extra}
        try:
            return wire.properties(
                content_type=message.content_type, content_encoding=message.content_encoding,
                headers=headers, delivery_mode=message.delivery_mode, priority=priority,
                correlation_id=message.correlation_id, reply_to=message.reply_to)
        except ENCODE_ERRORS as exc:
            raise EncodeError(f"cannot encode the message's AMQP properties: {exc}") from exc

    # -- topology --

    async def _destination(self, route: Route, eta: dt.datetime | None) -> tuple[str, str]:
        """Declare what ``route`` needs (once); return the exchange and routing key to use."""
        conn = self._conn
        if self._routes_generation != conn.generation:
            self._routes.clear()
            self._routes_generation = conn.generation
        if route not in self._routes:
            await self._declare_route(route)
            self._routes.add(route)
        exchange = route.exchange or ""
        key = (route.routing_key or route.queue) if exchange else route.queue
        if eta is not None:
            ahead = eta.timestamp() - self._clock.time()
            # Delay queues resolve whole seconds: an ETA within a second past the horizon
            # (a countdown equal to it, rounded to the microsecond) is the worker's to hold.
            horizon = self._settings.worker_eta_horizon
            if ahead >= horizon + 1:
                level = cast(int, delay_level(ahead, horizon))
                return "", await self._delay_queue(exchange, key, level)
        return exchange, key

    async def _declare_route(self, route: Route) -> None:
        await self._ensure_queue(route.queue)
        if route.exchange:
            await self._ensure_binding(route.queue, route.exchange, route.exchange_type,
                                       route.routing_key or route.queue)

    async def _ensure_binding(self, queue: str, exchange: str, kind: str, key: str) -> None:
        conn = self._conn
        await conn.ensure(("exchange", exchange),
                          functools.partial(conn.declare_exchange, exchange, kind))
        await conn.ensure(("binding", queue, exchange, key),
                          functools.partial(conn.bind, queue, exchange, key))

    async def _ensure_queue(self, name: str) -> None:
        await self._conn.ensure(("queue", name), functools.partial(self._declare_queue, name))

    async def _declare_queue(self, name: str) -> None:
        await self._conn.declare_queue(name, await self.task_queue_arguments())
        for spec in self._settings.task_queues:
            if spec.name == name and spec.exchange:
                await self._ensure_binding(name, spec.exchange, spec.exchange_type,
                                           spec.routing_key or name)

    async def _delay_queue(self, exchange: str, key: str, level: int) -> str:
        name = delay_queue(exchange, key, level)
        arguments: Arguments = {
            "x-message-ttl": 2 ** level * 1000,
            "x-dead-letter-exchange": exchange,
            "x-dead-letter-routing-key": key,
        }
        await self._conn.ensure(("queue", name),
                                functools.partial(self._durable_queue, name, arguments))
        return name

    async def _dead_queue(self, queue: str) -> str:
        name = dead_queue(queue)
        limit = {"x-max-length": self._dead_limit} if self._dead_limit else {}
        await self._conn.ensure(("queue", name),
                                functools.partial(self._durable_queue, name, limit))
        return name

    async def _durable_queue(self, name: str, arguments: Arguments) -> None:
        await self._conn.declare_queue(name, {**await self._queue_arguments(), **arguments})

    async def task_queue_arguments(self) -> Arguments:
        """The arguments this broker declares task queues with (``max_priority`` and
        ``queue_arguments``): what a Celery app sharing the queues must declare too."""
        priority = {"x-max-priority": self._max_priority} if self._max_priority else {}
        return {**await self._queue_arguments(), **priority}

    async def _queue_arguments(self) -> Arguments:
        if self._extra_arguments is not None:
            return self._extra_arguments
        # The default follows the server's version, known once connected.
        return default_queue_arguments((await self.connection()).version)

    # -- consuming and inspection --

    async def consumer(self, queues: Sequence[str], *, prefetch: int) -> AMQPConsumer:
        await self._conn.connect()
        global_qos = self._options.get("global_qos")
        if global_qos is None:
            # RabbitMQ 4.3 refuses channel-wide (global) QoS by default.
            global_qos = self._conn.version < (4, 3)
        consumer = AMQPConsumer(self, queues, prefetch, bool(global_qos))
        await consumer.start()
        self._consumers.add(consumer)
        return consumer

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Read without removing: got unacked, then given back when the channel closes."""
        name = dead_queue(queue)
        out: list[DeadLetter] = []
        try:
            async with self._conn.scratch() as channel:
                declared = await channel.queue_declare(name, passive=True)
                for _ in range(declared.message_count or 0):
                    raw = await channel.basic_get(name)
                    if isinstance(raw.delivery, Basic.GetEmpty):
                        break
                    out.append(self._dead_letter(queue, raw))
        except ChannelNotFoundEntity:
            return []
        return out[-limit:] if limit > 0 else []

    def _dead_letter(self, queue: str, raw: DeliveredMessage) -> DeadLetter:
        message, _, _ = to_message(raw.header.properties, raw.body)
        reason = message.headers.pop(REASON, "")
        dead_at = message.headers.pop(DEAD_AT, 0.0)
        return DeadLetter(queue, reason if isinstance(reason, str) else repr(reason), message,
                          time=dead_at / 1000 if isinstance(dead_at, int | float) else 0.0)

    async def purge(self, queue: str) -> int:
        """Empty ``queue`` and the delay queues of its parked messages."""
        names = [queue, *(delay_queue("", queue, level) for level in range(MAX_DELAY_LEVEL + 1))]
        total = 0
        channel: AbstractChannel | None = None
        try:
            for name in names:
                if channel is None or channel.is_closed:
                    channel = await self._conn.channel()
                with contextlib.suppress(ChannelNotFoundEntity):
                    purged = await channel.queue_purge(name)
                    total += purged.message_count or 0
        except TRANSPORT_ERRORS as exc:
            raise transport_error(f"purging {queue!r}", exc) from exc
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    await channel.close()
        return total


def default_queue_arguments(version: tuple[int, ...]) -> Arguments:
    """The classic queue a server of ``version`` is asked for (docs/brokers/amqp.md, *Queue
    arguments*): before 3.12, lazy mode (messages go to disk as they come, not paged out
    under pressure), which makes a confirmed persistent message cheaper for the server and
    keeps the version 1 store's prompt delivery (on 3.10 the version 2 store holds each
    message back by about half a millisecond); on 3.12 the version 2 store, which ignores
    the lazy mode, its queues being lazy already; from 3.13 on (and on servers that are not
    RabbitMQ, or too old to know these arguments) nothing: every classic queue is version
    2 there."""
    if (3, 6) <= version < (3, 12):
        return {"x-queue-mode": "lazy"}
    if (3, 12) <= version < (3, 13):
        return {"x-queue-version": 2}
    return {}


def _checked_arguments(value: Any) -> Arguments | None:
    """``queue_arguments`` checked; None when unset (the default follows the server)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ImproperlyConfigured(
            f"broker_transport_options['queue_arguments'] must map names to values, "
            f"not {value!r}")
    owned = sorted(OWNED_ARGUMENTS.intersection(value))
    if owned:
        raise ImproperlyConfigured(
            f"broker_transport_options['queue_arguments'] cannot set {', '.join(owned)}: "
            "aiotq sets them itself (x-max-priority through 'max_priority')")
    return dict(value)


def _max_priority(value: Any) -> int | None:
    if value is None or value == 0:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
        raise ImproperlyConfigured(
            f"broker_transport_options['max_priority'] must be 1-255 or None, not {value!r}")
    return value
