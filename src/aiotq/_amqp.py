"""What the ``amqp://`` broker and the ``rpc://`` backend share.

One robust connection per event loop (aio-pika's robust connection owns reconnecting),
with plain aiormq channels opened from the live transport on demand:

* a pool of publisher-confirm channels, each with a :class:`Publisher` that writes the
  publishes of one event-loop turn in a few socket writes (group commit) and lets each
  caller wait for its own confirm;
* one topology channel for declarations, each declared once per connection (cached until
  the connection is replaced);
* :class:`Subscription`: a consuming channel that re-declares and consumes again by
  itself after a channel or connection loss; its deliveries are read by a :func:`tap`
  handler as the connection reads them, and acked in batches by an :class:`Acker`.

The hot paths (publishing and its confirms, acking, reading deliveries) bypass aiormq's
per-message machinery: aiotq writes their frames (encoded by :mod:`aiotq._amqp_wire`) to
the socket and reads them from the connection's reader itself, through internals of
aiormq 7.2 that pyproject.toml pins and tests/integration/test_amqp.py covers. aiormq
still opens, closes and declares.

A publish while the connection is down fails at once with
:class:`~aiotq.exceptions.TransportError` (the caller's retry policy decides), instead of
waiting for the reconnect. Every aio-pika / aiormq error is translated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import struct
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any, cast

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq import Channel
from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from . import _amqp_wire as wire
from .exceptions import EncodeError, TransportError, UnroutableError
from .message import origin

logger = logging.getLogger("aiotq.amqp")

#: What a failing connection or channel raises, from aiormq, asyncio and the socket.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    AMQPError, ChannelInvalidStateError, ConnectionError, OSError,
)

#: Opening a channel on a connection that just closed raises a plain RuntimeError.
CHANNEL_ERRORS: tuple[type[BaseException], ...] = (*TRANSPORT_ERRORS, RuntimeError)

Arguments = dict[str, Any]


def transport_error(doing: str, exc: BaseException) -> TransportError:
    return TransportError(f"{doing} failed: {exc!r}")


def server_version(properties: Mapping[str, Any]) -> tuple[int, ...]:
    raw = properties.get("version", b"")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    parts: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


#: A message's properties as :func:`aiotq._amqp_wire.properties` encodes them.
Properties = tuple[int, bytes]

#: What encoding a message can raise (pamqp's and struct's errors included).
ENCODE_ERRORS: tuple[type[BaseException], ...] = (TypeError, ValueError, OverflowError,
                                                  struct.error)


#: What a consumer gets for each delivery: the method frame, its properties, its body.
DeliveryHandler = Callable[[Basic.Deliver, Basic.Properties, bytes], None]
#: What a publisher gets for each returned message, the same way.
ReturnHandler = Callable[[Basic.Return, Basic.Properties, bytes], None]
#: What a publisher gets for each confirm.
ConfirmHandler = Callable[[Basic.Ack | Basic.Nack], None]


class _Tap(asyncio.Queue[tuple[int, Any]]):
    """Stands in for an aiormq channel's inbound frame queue (``channel.frames``), which
    the connection's reader fills: deliveries, returned messages (a method frame, its
    content header and body frames, which AMQP sends in a row on a channel) and confirms go
    to their handlers as the connection reads them, instead of through the channel's
    reader task, a DeliveredMessage and a task or a callback per message. Every other frame
    goes on to the channel's own queue and reader."""

    def __init__(self, frames: asyncio.Queue[tuple[int, Any]], *,
                 on_delivery: DeliveryHandler | None, on_return: ReturnHandler | None,
                 on_confirm: ConfirmHandler | None) -> None:
        super().__init__()
        self._frames = frames
        self._with_content: dict[type, Callable[[Any, Basic.Properties, bytes], None]] = {}
        if on_delivery is not None:
            self._with_content[Basic.Deliver] = on_delivery
        if on_return is not None:
            self._with_content[Basic.Return] = on_return
        self._on_confirm = on_confirm
        self._method: Basic.Deliver | Basic.Return | None = None
        self._header: ContentHeader | None = None
        self._body: list[bytes] = []
        self._received = 0

    async def put(self, item: tuple[int, Any]) -> None:
        frame = item[1]
        if self._method is None:
            kind = type(frame)
            if kind in self._with_content:
                self._method = frame
            elif (kind is Basic.Ack or kind is Basic.Nack) and self._on_confirm is not None:
                self._call(self._on_confirm, frame)
            else:
                await self._frames.put(item)
            return
        if self._header is None:
            if type(frame) is not ContentHeader:
                raise ValueError(f"unexpected frame {frame!r} instead of a content header")
            self._header = frame
            if not frame.body_size:
                self._complete(b"")
            return
        if type(frame) is not ContentBody:
            raise ValueError(f"unexpected frame {frame!r} instead of a content body")
        self._body.append(frame.value)
        self._received += len(frame.value)
        if self._received >= self._header.body_size:
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
            self._received = 0
            self._complete(body)

    def _complete(self, body: bytes) -> None:
        method, header = self._method, self._header
        self._method = self._header = None
        assert method is not None and header is not None
        self._call(self._with_content[type(method)], method, header.properties, body)

    @staticmethod
    def _call(handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:  # the connection's reader must go on
            logger.exception("handling %r failed", args[0])

    async def get(self) -> tuple[int, Any]:
        return await self._frames.get()

    def task_done(self) -> None:
        self._frames.task_done()


def tap(channel: AbstractChannel, *, on_delivery: DeliveryHandler | None = None,
        on_return: ReturnHandler | None = None,
        on_confirm: ConfirmHandler | None = None) -> bool:
    """Hand the channel's deliveries, returns and confirms to these handlers synchronously,
    as they are read (see :class:`_Tap`; aiormq 7.2 internals). False when the channel is
    not what this aiotq knows (another aiormq): consumers then keep being served by their
    basic_consume callback."""
    frames = getattr(channel, "frames", None)
    if type(frames) is not asyncio.Queue:
        return False
    cast(Any, channel).frames = _Tap(frames, on_delivery=on_delivery, on_return=on_return,
                                     on_confirm=on_confirm)
    return True


class _Pending:
    """One publish: its frames, and the future its caller awaits for the broker's confirm."""

    __slots__ = ("deadline", "frames", "future", "message_id", "tag")

    def __init__(self, frames: list[bytes], message_id: str,
                 future: asyncio.Future[None]) -> None:
        self.frames = frames
        self.message_id = message_id
        self.future = future
        self.tag = 0
        self.deadline = math.inf


def writable(channel: Channel) -> bool:
    """Whether frames may still be sent on ``channel``. Once RabbitMQ closed it, aiormq
    answers close-ok and frees the number, and a frame sent on a freed number is a
    connection error; aiormq records the close (``_close_exception``) before it answers."""
    return not channel.is_closed and channel._close_exception is None


class Publisher:
    """Publishes on one confirm channel, in batches (group commit).

    The publishes of one event-loop turn (a gather of ``delay()`` calls, a group) go out
    together, with consecutive delivery tags, as one socket write per ``EARLY`` publishes
    (so RabbitMQ starts on the first ones while the rest are still being encoded) and one
    for the rest at the end of the turn; each caller then awaits its own confirm. The
    frames go straight to the connection's socket (its writer comes from
    :class:`_Streams`), and the broker's confirms and returns come straight from the
    connection's reader (:func:`tap`): this class keeps the channel's publisher-confirm
    bookkeeping itself, and aiormq only opens and closes the channel.

    A returned message fails its publish (PublishError), a nack too (DeliveryError); a
    closed channel or connection fails every publish not yet confirmed with the reason; a
    confirm that does not come within ``timeout`` fails its publish with
    :class:`TimeoutError`.
    """

    #: Publishes written at once when this many wait (see the class docstring).
    EARLY = 16
    #: Bytes waiting in the socket's buffer above which a publish waits for it to drain.
    BACKLOG = 1 << 20

    def __init__(self, channel: AbstractChannel, writer: asyncio.StreamWriter,
                 timeout: float | None) -> None:
        self.channel = cast(Channel, channel)
        self.number: int = channel.number
        self._writer = writer
        self._frame_max: int = self.channel.connection.connection_tune.frame_max
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._prefix = secrets.token_hex(8) + "."
        self._ids = itertools.count(1)
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        self._queue: list[_Pending] = []
        self._scheduled = False
        #: The channel's last delivery tag, and its publishes not settled yet, by tag.
        self._tag = 0
        self._unconfirmed: OrderedDict[int, _Pending] = OrderedDict()
        self._by_id: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False
        if not tap(channel, on_return=self._on_return, on_confirm=self._on_confirm):
            raise TransportError("cannot read confirms from this aiormq channel; this aiotq "
                                 "needs aiormq 7.2")
        channel.closing.add_done_callback(self._on_closed)

    @property
    def is_closed(self) -> bool:
        return self._lost or not writable(self.channel) or self._writer.transport.is_closing()

    @property
    def backlogged(self) -> bool:
        return self._writer.transport.get_write_buffer_size() > self.BACKLOG

    async def drain(self) -> None:
        """Wait until the socket took what it was given (after ``backlogged``)."""
        await self._writer.drain()

    def submit(self, exchange: str, routing_key: str, mandatory: bool, properties: Properties,
               body: bytes) -> _Pending:
        """Encode a publish into the next batch; raises what encoding raises."""
        if self.is_closed:
            raise ChannelInvalidStateError(f"{self.channel!r} closed")
        key = (exchange, routing_key, mandatory)
        method = self._methods.get(key)
        if method is None:
            method = wire.publish_method(self.number, exchange, routing_key, mandatory)
            if len(self._methods) >= 1024:
                self._methods.clear()
            self._methods[key] = method
        message_id = f"{self._prefix}{next(self._ids)}"
        frames = wire.content(self.number, *properties, message_id, body, self._frame_max)
        frames.insert(0, method)
        pending = _Pending(frames, message_id, self._loop.create_future())
        queue = self._queue
        queue.append(pending)
        if len(queue) >= self.EARLY:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return pending

    def forget(self, pending: _Pending) -> None:
        """Its caller stopped waiting (a publish written stays counted by the broker)."""
        self._unconfirmed.pop(pending.tag, None)
        self._by_id.pop(pending.message_id, None)

    def _flush(self) -> None:
        self._scheduled = False
        batch = [pending for pending in self._queue if not pending.future.done()]
        self._queue = []
        if not batch:
            return
        if self.is_closed:
            self._fail(batch, None)
            return
        unconfirmed, by_id = self._unconfirmed, self._by_id
        deadline = math.inf if self._timeout is None else self._loop.time() + self._timeout
        tag = self._tag
        for pending in batch:
            tag += 1
            pending.tag = tag
            pending.deadline = deadline
            unconfirmed[tag] = pending
            by_id[pending.message_id] = pending
        self._tag = tag
        self._writer.write(b"".join([frame for pending in batch for frame in pending.frames]))
        for pending in batch:
            pending.frames = []
        if self._timer is None and self._timeout is not None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def _on_confirm(self, frame: Basic.Ack | Basic.Nack) -> None:
        tag = frame.delivery_tag
        unconfirmed = self._unconfirmed
        if not frame.multiple:
            pending = unconfirmed.pop(tag, None)
            if pending is not None:
                self._settle(pending, frame)
            return
        while unconfirmed:
            first = next(iter(unconfirmed))
            if tag and first > tag:
                break
            self._settle(unconfirmed.pop(first), frame)

    def _settle(self, pending: _Pending, frame: Basic.Ack | Basic.Nack) -> None:
        self._by_id.pop(pending.message_id, None)
        if pending.future.done():
            return
        if type(frame) is Basic.Ack:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(DeliveryError(None, frame))

    def _on_return(self, frame: Basic.Return, properties: Basic.Properties,
                   body: bytes) -> None:
        # RabbitMQ returns a message before it confirms it.
        pending = self._by_id.pop(cast(str, properties.message_id), None)
        if pending is None:
            logger.warning("RabbitMQ returned a message no publish waits for (%s)",
                           properties.message_id)
            return
        self._unconfirmed.pop(pending.tag, None)
        if not pending.future.done():
            returned = DeliveredMessage(delivery=frame, header=ContentHeader(
                body_size=len(body), properties=properties), body=body, channel=self.channel)
            pending.future.set_exception(PublishError(returned, frame))

    def _expire(self) -> None:
        self._timer = None
        unconfirmed = self._unconfirmed
        now = self._loop.time()
        while unconfirmed:
            pending = unconfirmed[next(iter(unconfirmed))]
            if pending.deadline > now:
                self._timer = self._loop.call_at(pending.deadline, self._expire)
                return
            unconfirmed.popitem(last=False)
            self._by_id.pop(pending.message_id, None)
            if not pending.future.done():
                pending.future.set_exception(
                    TimeoutError(f"no confirm from RabbitMQ within {self._timeout} s"))

    def _on_closed(self, closing: asyncio.Future[Any]) -> None:
        self._lost = True
        reason = None if closing.cancelled() else closing.exception()
        waiting = self._queue + list(self._unconfirmed.values())
        self._queue = []
        self._unconfirmed.clear()
        self._by_id.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail(waiting, reason)

    @staticmethod
    def _fail(batch: list[_Pending], reason: BaseException | None) -> None:
        for pending in batch:
            if pending.future.done():
                continue
            error = ChannelInvalidStateError(
                f"the channel closed before RabbitMQ confirmed the publish: {reason!r}")
            if isinstance(reason, Exception):
                error.__cause__ = reason
            pending.future.set_exception(error)


class Acker:
    """Acks the deliveries of one consuming channel, batched.

    Acks go out together, as one write: at once when they settle every delivery the
    channel has made (an idle consumer, a round trip someone waits for), else after at most
    ``delay`` seconds or ``batch`` acks, so a busy worker pays one socket write per batch
    instead of one per message. The write is a single ``basic.ack`` with ``multiple`` for
    the tags that close the gap above every tag acked so far (delivery tags of a channel
    are consecutive from 1, so "every lower tag is acked" is known without tracking
    deliveries), and single acks for the rest. A tag is acked at most once: RabbitMQ
    closes the channel on an unknown tag. Acking on a closed channel does nothing (RabbitMQ
    has requeued its deliveries). Like :class:`Publisher`, it writes to the socket itself.
    """

    def __init__(self, channel: AbstractChannel, writer: asyncio.StreamWriter, *,
                 delay: float = 0.002, batch: int = 64) -> None:
        self.channel = cast(Channel, channel)
        self._number: int = channel.number
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._delay = delay
        self._batch = batch
        #: Every tag up to the floor is acked; ``_above`` holds the acked ones above it.
        self._floor = 0
        self._above: set[int] = set()
        #: The highest delivery tag seen.
        self._seen = 0
        self._pending: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._soon = False

    def delivered(self, tag: int) -> None:
        if tag > self._seen:
            self._seen = tag

    def ack(self, tag: int) -> None:
        pending = self._pending
        pending.append(tag)
        if self._soon:
            return
        if len(pending) >= self._batch or \
                self._seen - self._floor - len(self._above) <= len(pending):
            self._soon = True
            self._loop.call_soon(self.flush)
        elif self._timer is None:
            self._timer = self._loop.call_later(self._delay, self.flush)

    def frames(self, tags: list[int]) -> bytes:
        """The ack frames for ``tags`` (each acked once), advancing the floor."""
        floor = self._floor
        above = self._above
        new = {tag for tag in tags if tag > floor and tag not in above}
        covered = 0
        while True:
            tag = floor + 1
            if tag in new:
                covered = tag
            elif tag in above:
                above.discard(tag)
            else:
                break
            floor = tag
        self._floor = floor
        number = self._number
        out = [wire.ack(number, covered, True)] if covered else []
        for tag in sorted(tag for tag in new if tag > floor):
            out.append(wire.ack(number, tag, False))
            above.add(tag)
        return b"".join(out)

    def flush(self) -> None:
        """Write the pending acks now."""
        self._soon = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if pending and writable(self.channel) and not self._writer.transport.is_closing():
            payload = self.frames(pending)
            if payload:
                self._writer.write(payload)


class _Streams(TransportFactory):
    """Opens a connection's socket as aiormq does, and keeps its writer: publishers and
    ackers write their batches to it themselves. aio-pika hands it to aiormq with each
    (re)connection; the newest socket is the live connection's."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None

    async def create(self, url: Any, **kwargs: Any
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opener = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await opener.create(url, **kwargs)
        self.writer = writer
        return reader, writer


class AMQPConnection:
    """A robust connection with a confirmed publishing pool and cached declarations."""

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        self.url = url
        self._pool_size = max(1, int(options.get("publish_channels", 4)))
        self._publish_timeout: float | None = options.get("publish_timeout", 30.0)
        self._connect_timeout: float | None = options.get("connect_timeout", 10.0)
        self._reconnect_interval: float | None = options.get("reconnect_interval")
        self._robust: AbstractRobustConnection | None = None
        self._streams = _Streams()
        self.closed = False
        self._connecting: asyncio.Lock | None = None
        self._pool: list[Publisher | None] = [None] * self._pool_size
        self._opening: list[asyncio.Lock] = [asyncio.Lock() for _ in range(self._pool_size)]
        self._next = 0
        self._picks = 0
        self._topology: AbstractChannel | None = None
        self._topology_lock = asyncio.Lock()
        self._declared: set[Hashable] = set()
        self._declaring: dict[Hashable, asyncio.Future[None]] = {}
        #: Grows whenever declarations are forgotten, so callers' own caches can follow.
        self.generation = 0
        self.version: tuple[int, ...] = ()

    # -- connection --

    async def connect(self) -> None:
        if self._robust is not None:
            return
        if self.closed:
            raise TransportError("the AMQP connection was closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._robust is not None:
                return
            extra: dict[str, Any] = {}
            if self._reconnect_interval is not None:
                extra["reconnect_interval"] = self._reconnect_interval
            # What aio_pika.connect_robust does, with aiotq's socket opener for aiormq.
            robust = aio_pika.RobustConnection(
                make_url(self.url, **extra),
                client_properties={"connection_name": f"aiotq {origin()}"}, **extra)
            robust.kwargs["transport_factory"] = self._streams
            try:
                await robust.connect(timeout=self._connect_timeout)
            except TRANSPORT_ERRORS as exc:
                raise transport_error(f"connecting to {_safe(self.url)}", exc) from exc
            robust.reconnect_callbacks.add(self._on_reconnect)
            self._robust = robust
            transport = robust.transport
            if transport is not None:
                self.version = server_version(transport.connection.server_properties)

    async def close(self) -> None:
        self.closed = True
        robust, self._robust = self._robust, None
        if robust is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await robust.close()

    async def ready(self) -> None:
        """Wait until the connection is up (again)."""
        await self.connect()
        assert self._robust is not None
        await self._robust.ready()

    def _on_reconnect(self, *_: Any) -> None:
        self.forget()

    def forget(self) -> None:
        """Declare everything again on next use (after a reconnect, or a returned message)."""
        self._declared.clear()
        self.generation += 1

    async def channel(self, *, confirms: bool = False) -> AbstractChannel:
        """A new channel on the live transport; TransportError when there is none."""
        await self.connect()
        assert self._robust is not None
        transport = self._robust.transport
        if transport is None or transport.connection.is_closed:
            raise TransportError(f"not connected to {_safe(self.url)} (reconnecting)")
        try:
            return await transport.connection.channel(
                publisher_confirms=confirms, on_return_raises=True,
            )
        except CHANNEL_ERRORS as exc:
            raise transport_error("opening a channel", exc) from exc

    def writer(self) -> asyncio.StreamWriter:
        """The live connection's socket writer (for a channel just opened on it)."""
        writer = self._streams.writer
        if writer is None:
            raise TransportError("aio-pika did not open the socket through aiotq's opener; "
                                 "this aiotq needs aio-pika 10.2 and aiormq 7.2")
        return writer

    # -- publishing --

    def pick(self) -> int:
        """A slot of the publishing pool, round robin by runs of ``Publisher.EARLY``
        picks: a burst of publishes fills one channel's early write, then the next's."""
        self._picks += 1
        if self._picks > Publisher.EARLY:
            self._picks = 1
            self._next = (self._next + 1) % self._pool_size
        return self._next

    async def publisher(self, slot: int) -> Publisher:
        publisher = self._pool[slot]
        if publisher is not None and not publisher.is_closed:
            return publisher
        async with self._opening[slot]:
            publisher = self._pool[slot]
            if publisher is None or publisher.is_closed:
                channel = await self.channel(confirms=True)
                publisher = self._pool[slot] = Publisher(channel, self.writer(),
                                                         self._publish_timeout)
            return publisher

    async def publish(
        self, publisher: Publisher, body: bytes, properties: Properties, exchange: str,
        routing_key: str, *, mandatory: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm (``properties`` as
        :func:`aiotq._amqp_wire.properties` encodes them)."""
        try:
            if publisher.backlogged:
                await publisher.drain()
            pending = publisher.submit(exchange, routing_key, mandatory, properties, body)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(f"publishing to {exchange!r}/{routing_key!r}", exc) from exc
        except ENCODE_ERRORS as exc:
            raise EncodeError(f"cannot encode the message's AMQP properties: {exc}") from exc
        try:
            await pending.future
        except asyncio.CancelledError:
            publisher.forget(pending)
            raise
        except PublishError as exc:
            raise UnroutableError(
                f"RabbitMQ returned the message: no queue is bound to exchange {exchange!r} "
                f"with routing key {routing_key!r}"
            ) from exc
        except DeliveryError as exc:
            raise TransportError(f"RabbitMQ refused the message (nack): {exc!r}") from exc
        except TRANSPORT_ERRORS as exc:
            raise transport_error(f"publishing to {exchange!r}/{routing_key!r}", exc) from exc

    # -- topology --

    async def ensure(self, key: Hashable, declare: Callable[[], Awaitable[None]]) -> None:
        """Run ``declare`` once per connection for ``key``; concurrent callers share it."""
        if key in self._declared:
            return
        pending = self._declaring.get(key)
        if pending is None:
            pending = self._declaring[key] = asyncio.ensure_future(declare())
            pending.add_done_callback(lambda done: self._settled(key, done))
        await asyncio.shield(pending)
        self._declared.add(key)

    def _settled(self, key: Hashable, done: asyncio.Future[None]) -> None:
        self._declaring.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: its waiters may all have been cancelled

    async def declare_queue(self, name: str, arguments: Arguments | None = None, *,
                            durable: bool = True) -> None:
        """Declare ``name``; if it exists with other arguments, use it as it is."""
        try:
            await self._declare(lambda ch: ch.queue_declare(
                name, durable=durable, arguments=arguments))
        except ChannelPreconditionFailed as exc:
            logger.warning(
                "queue %r exists with other arguments than %r (declared by another client, "
                "such as Celery?); using it as it is: %s", name, arguments, exc.args[-1:])
            await self._declare(lambda ch: ch.queue_declare(name, passive=True))

    async def declare_exchange(self, name: str, kind: str) -> None:
        try:
            await self._declare(lambda ch: ch.exchange_declare(
                name, exchange_type=kind, durable=True))
        except ChannelPreconditionFailed as exc:
            logger.warning("exchange %r exists with another type than %r; using it as it is: "
                           "%s", name, kind, exc.args[-1:])
            await self._declare(lambda ch: ch.exchange_declare(name, passive=True))

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._declare(lambda ch: ch.queue_bind(queue, exchange, routing_key=routing_key))

    async def _declare(self, operation: Callable[[AbstractChannel], Awaitable[Any]]) -> Any:
        # One at a time: a refused declaration closes the channel under the others.
        async with self._topology_lock:
            channel = self._topology
            if channel is None or channel.is_closed:
                channel = self._topology = await self.channel()
            try:
                return await operation(channel)
            except (ChannelPreconditionFailed, ChannelNotFoundEntity):
                raise
            except TRANSPORT_ERRORS as exc:
                raise transport_error("declaring", exc) from exc

    @contextlib.asynccontextmanager
    async def scratch(self) -> AsyncIterator[AbstractChannel]:
        """A short-lived channel, for operations that may close it (a passive declare)."""
        channel = await self.channel()
        try:
            yield channel
        except TRANSPORT_ERRORS as exc:
            if isinstance(exc, ChannelNotFoundEntity):
                raise
            raise transport_error("an AMQP operation", exc) from exc
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*TRANSPORT_ERRORS):
                    await channel.close()


class Subscription:
    """A consuming channel that comes back by itself.

    ``setup(channel)`` declares and consumes on every new channel; ``on_lost()`` runs when
    a channel goes away (its unacked deliveries are back in their queues by then).
    """

    def __init__(self, connection: AMQPConnection,
                 setup: Callable[[AbstractChannel], Awaitable[None]],
                 on_lost: Callable[[], None], *, retry_interval: float = 0.5) -> None:
        self._connection = connection
        self._setup = setup
        self._on_lost = on_lost
        self._retry_interval = retry_interval
        self._watcher: asyncio.Task[None] | None = None
        self.channel: AbstractChannel | None = None

    async def open(self) -> None:
        self.channel = await self._open_once()
        self._watcher = asyncio.create_task(self._watch())

    async def _open_once(self) -> AbstractChannel:
        channel = await self._connection.channel()
        try:
            await self._setup(channel)
        except BaseException:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await channel.close()
            raise
        return channel

    async def _watch(self) -> None:
        while (channel := self.channel) is not None:
            with contextlib.suppress(Exception):
                await channel.closing
            self.channel = None
            self._on_lost()
            self.channel = await self._reopen()

    async def _reopen(self) -> AbstractChannel | None:
        """A new consuming channel, once the connection is back; None once it is closed."""
        while not self._connection.closed:
            try:
                await self._connection.ready()
                return await self._open_once()
            except Exception as exc:  # whatever it is, a consumer keeps trying
                if not self._connection.closed:
                    logger.warning("cannot consume again yet (%s); retrying", exc)
                    await asyncio.sleep(self._retry_interval)
        return None

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        channel, self.channel = self.channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                await channel.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{host}"
