"""What the ``amqp://`` broker and the ``rpc://`` backend share.

One robust connection per event loop (aio-pika's robust connection owns reconnecting),
with plain aiormq channels opened from the live transport on demand:

* a pool of publisher-confirm channels, each with a :class:`Publisher` that writes the
  publishes of one event-loop turn in a few socket writes (group commit) and lets each
  caller wait for its own confirm;
* one topology channel for declarations, each declared once per connection (cached until
  the connection is replaced);
* :class:`Subscription`: a consuming channel that re-declares and consumes again by
  itself after a channel or connection loss; a consumer's deliveries come from
  :meth:`AMQPConnection.tap` and are acked in batches by an :class:`Acker`.

The hot paths (publishing and its confirms, acking, deliveries) bypass aiormq's
per-message machinery: aiotq opens the socket (:class:`_Streams`, aiormq's transport
factory, handed over by aio-pika), writes those frames to it and takes them out of what
it reads (:class:`_Reader`), encoded and decoded by :mod:`aiotq._amqp_wire`. aiormq
still opens and closes channels, declares, consumes and keeps the connection alive; the
few of its internals this touches are pinned in pyproject.toml and covered by
tests/integration/test_amqp.py.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, SupportsIndex, cast

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq import Channel
from aiormq.abc import AbstractChannel
from aiormq.connection import TransportFactory
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)

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


#: What a consumer gets for each delivery: the method's arguments, properties, body.
DeliveryHandler = Callable[[wire.Deliver, wire.Props, bytes], None]
#: What a publisher gets for each returned message, the same way.
ReturnHandler = Callable[[wire.Return, wire.Props, bytes], None]
#: What a publisher gets for each confirm.
ConfirmHandler = Callable[[wire.Confirm], None]

_CHANNEL_CLOSING = {(20, 40), (20, 41)}  # channel.close, channel.close-ok


class _Tap:
    """What aiotq takes from one channel's frames (see :class:`_Reader`)."""

    __slots__ = ("_body", "_handler", "_method", "_needed", "_props", "on_confirm",
                 "on_delivery", "on_return")

    def __init__(self, on_delivery: DeliveryHandler | None, on_return: ReturnHandler | None,
                 on_confirm: ConfirmHandler | None) -> None:
        self.on_delivery = on_delivery
        self.on_return = on_return
        self.on_confirm = on_confirm
        self._handler: Callable[[Any, wire.Props, bytes], None] | None = None
        self._method: wire.Deliver | wire.Return | None = None
        self._props = wire.Props()
        self._body: list[bytes] = []
        self._needed = 0

    def take(self, kind: int, data: bytes, start: int, end: int) -> bool:
        """Handle the frame whose payload is ``data[start:end]`` if it is one of ours."""
        if kind == wire.FRAME_METHOD:
            if self._handler is not None:
                logger.error("a method frame came before the content of %r", self._method)
                self._handler = None
            return self._take_method(data, start)
        if self._handler is None:
            return False
        if kind == wire.FRAME_HEADER:
            self._needed = wire.CONTENT_HEAD.unpack_from(data, start)[2]
            try:
                self._props = wire.decode_properties(data, start + 12)
            except (ValueError, struct.error, IndexError) as exc:
                # pamqp would close the connection over it, and the message would come back
                # to do so again: deliver it without properties instead (the worker
                # dead-letters a message without headers).
                logger.warning("cannot decode the properties of %r: %s", self._method, exc)
                self._props = wire.Props()
            if not self._needed:
                self._complete(b"")
            return True
        if kind != wire.FRAME_BODY:
            return False
        self._body.append(data[start:end])
        self._needed -= end - start
        if self._needed <= 0:
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
            self._complete(body)
        return True

    def _take_method(self, data: bytes, start: int) -> bool:
        class_id, method_id = wire.METHOD_IDS.unpack_from(data, start)
        if class_id != wire.BASIC:
            return False
        if method_id == 60 and self.on_delivery is not None:  # basic.deliver
            self._method = wire.decode_deliver(data, start + 4)
            self._handler = self.on_delivery
        elif method_id in (80, 120) and self.on_confirm is not None:  # basic.ack / nack
            _call(self.on_confirm, wire.decode_confirm(data, start + 4, method_id == 80))
        elif method_id == 50 and self.on_return is not None:  # basic.return
            self._method = wire.decode_return(data, start + 4)
            self._handler = self.on_return
        else:
            return False
        return True

    def _complete(self, body: bytes) -> None:
        handler, self._handler = self._handler, None
        assert handler is not None
        _call(handler, self._method, self._props, body)


def _call(handler: Callable[..., None], *args: Any) -> None:
    try:
        handler(*args)
    except Exception:  # the connection's reader must go on
        logger.exception("handling %r failed", args[0])


class _Reader(asyncio.StreamReader):
    """The connection's stream reader, behind a filter.

    The frames of the channels aiotq tapped that it handles itself (deliveries, confirms,
    returned messages) are decoded here as the socket delivers them
    (:mod:`aiotq._amqp_wire`) and go to their handlers at once; they never reach aiormq,
    whose frame reader (three reads, a lock and a pamqp decode per frame, a queue and a
    task per channel) cost a consumer more than everything else it does. Every other frame
    reaches aiormq unchanged and in order. A tap ends with its channel's close or close-ok,
    so a channel number aiormq reuses is not tapped.

    aiormq takes a connection that sent it no frame for a while for dead: while aiotq takes
    every frame that arrives (a worker draining a queue), aiormq gets a heartbeat frame
    every ``KEEPALIVE`` seconds instead."""

    KEEPALIVE = 1.0
    _HEARTBEAT = wire.FRAME_HEAD.pack(8, 0, 0) + wire.FRAME_END

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._loop_time = loop.time
        self._taps: dict[int, _Tap] = {}
        self._rest = b""
        self._raw = False
        self._fed_at = loop.time()

    def tap(self, channel: int, *, on_delivery: DeliveryHandler | None = None,
            on_return: ReturnHandler | None = None,
            on_confirm: ConfirmHandler | None = None) -> None:
        self._taps[channel] = _Tap(on_delivery, on_return, on_confirm)

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        chunk = cast(bytes, data)  # what asyncio's protocol gives
        if self._raw:
            super().feed_data(chunk)
            return
        if self._rest:
            chunk, self._rest = self._rest + chunk, b""
        elif chunk[:4] == b"AMQP" and not self._taps:  # the server's protocol header: refused
            self._raw = True
            super().feed_data(chunk)
            return
        kept = self._filter(chunk)
        now = self._loop_time()
        if kept:
            self._fed_at = now
            super().feed_data(kept[0] if len(kept) == 1 else b"".join(kept))
        elif now - self._fed_at >= self.KEEPALIVE:
            self._fed_at = now
            super().feed_data(self._HEARTBEAT)

    def _filter(self, data: bytes) -> list[bytes]:
        """Take the frames of ours out of ``data``; return what aiormq gets, keep the end
        of a frame cut short for the next chunk."""
        taps = self._taps
        size = len(data)
        position = passed = 0
        kept: list[bytes] = []
        while size - position >= 7:
            kind, channel, length = wire.FRAME_HEAD.unpack_from(data, position)
            end = position + 8 + length
            if end > size:
                break
            if data[end - 1] != 0xCE:  # not a frame: aiormq reports it
                self._raw = True
                position = size
                break
            tapped = taps.get(channel) if taps else None
            if tapped is not None:
                start = position + 7
                if tapped.take(kind, data, start, end - 1):
                    if passed < position:
                        kept.append(data[passed:position])
                    passed = end
                elif kind == wire.FRAME_METHOD and \
                        wire.METHOD_IDS.unpack_from(data, start) in _CHANNEL_CLOSING:
                    del taps[channel]
            position = end
        if passed < position:
            kept.append(data if passed == 0 and position == size else data[passed:position])
        self._rest = data[position:]
        return kept

    def feed_eof(self) -> None:
        if self._rest:  # a frame cut short: aiormq reports the connection closed mid-frame
            super().feed_data(self._rest)
            self._rest = b""
        super().feed_eof()


class _Socket:
    """A connection's socket as aiotq uses it: frames written straight to ``writer``,
    channels tapped on ``reader``."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: _Reader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


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
    """Publishes on one channel, in batches (group commit), with publisher confirms unless
    ``confirms`` is false.

    The publishes of one event-loop turn (a gather of ``delay()`` calls, a group) go out
    together, with consecutive delivery tags, in one socket write whenever the turn's
    count reaches a multiple of ``EARLY`` (so RabbitMQ starts on the first ones while the
    rest are still being encoded) and one for the rest at the end of the turn; each caller
    then awaits its own confirm. Without confirms the turn's first publish is also written
    at once, before its caller yields: those are replies a caller waits for. (On a confirm
    channel that saved a round trip only about 10 µs, not worth changing how a bulk
    enqueue reaches RabbitMQ.) The frames go straight to the connection's socket, and the
    broker's confirms and returns come straight from it (:class:`_Reader`): this class
    keeps the channel's publisher-confirm bookkeeping itself, and aiormq only opens and
    closes the channel.

    A returned message fails its publish with :class:`UnroutableError`, a nack with
    :class:`TransportError`; a closed channel or connection fails every publish not yet
    confirmed with the reason; a confirm that does not come within ``timeout`` fails its
    publish with :class:`TimeoutError`. Without confirms a publish is done once written,
    and a closed channel fails only those not written yet.
    """

    #: Publishes written at once when this many wait (see the class docstring).
    EARLY = 16
    #: Bytes waiting in the socket's buffer above which a publish waits for it to drain.
    BACKLOG = 1 << 20

    def __init__(self, channel: AbstractChannel, socket: _Socket,
                 timeout: float | None, *, confirms: bool = True) -> None:
        self.channel = cast(Channel, channel)
        self.confirms = confirms
        self.number: int = channel.number
        self._writer = socket.writer
        self._frame_max: int = self.channel.connection.connection_tune.frame_max
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._prefix = secrets.token_hex(8) + "."
        self._ids = itertools.count(1)
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        self._queue: list[_Pending] = []
        #: Whether a flush waits for the end of this turn, and how many publishes came in it.
        self._scheduled = False
        self._in_turn = 0
        #: The channel's last delivery tag, and its publishes not settled yet, by tag.
        self._tag = 0
        self._unconfirmed: OrderedDict[int, _Pending] = OrderedDict()
        self._by_id: dict[str, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False
        socket.reader.tap(self.number, on_return=self._on_return, on_confirm=self._on_confirm)
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
        self._queue.append(pending)
        if not self._scheduled:
            self._scheduled = True
            self._in_turn = 0
            self._loop.call_soon(self._flush)
        self._in_turn += 1
        if self._in_turn % self.EARLY == 0 or (self._in_turn == 1 and not self.confirms):
            self._write()
        return pending

    def forget(self, pending: _Pending) -> None:
        """Its caller stopped waiting (a publish written stays counted by the broker)."""
        self._unconfirmed.pop(pending.tag, None)
        self._by_id.pop(pending.message_id, None)

    def _flush(self) -> None:
        self._scheduled = False
        self._write()

    def _write(self) -> None:
        batch = [pending for pending in self._queue if not pending.future.done()]
        self._queue = []
        if not batch:
            return
        if self.is_closed:
            self._fail(batch, None)
            return
        if self.confirms:
            self._await_confirms(batch)
        self._writer.write(b"".join([frame for pending in batch for frame in pending.frames]))
        for pending in batch:
            pending.frames = []
            if not self.confirms:
                pending.future.set_result(None)

    def _await_confirms(self, batch: list[_Pending]) -> None:
        """Number ``batch`` with the channel's next delivery tags, to match the confirms."""
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
        if self._timer is None and self._timeout is not None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def _on_confirm(self, confirm: wire.Confirm) -> None:
        tag = confirm.delivery_tag
        unconfirmed = self._unconfirmed
        if not confirm.multiple:
            pending = unconfirmed.pop(tag, None)
            if pending is not None:
                self._settle(pending, confirm)
            return
        while unconfirmed:
            first = next(iter(unconfirmed))
            if tag and first > tag:
                break
            self._settle(unconfirmed.pop(first), confirm)

    def _settle(self, pending: _Pending, confirm: wire.Confirm) -> None:
        self._by_id.pop(pending.message_id, None)
        if pending.future.done():
            return
        if confirm.ack:
            pending.future.set_result(None)
        else:
            pending.future.set_exception(
                TransportError("RabbitMQ refused the message (nack)"))

    def _on_return(self, returned: wire.Return, properties: wire.Props, body: bytes) -> None:
        # RabbitMQ returns a message before it confirms it.
        pending = self._by_id.pop(properties.message_id or "", None)
        if pending is None:
            logger.warning("RabbitMQ returned a message no publish waits for (%s)",
                           properties.message_id)
            return
        self._unconfirmed.pop(pending.tag, None)
        if not pending.future.done():
            pending.future.set_exception(UnroutableError(
                f"RabbitMQ returned the message ({returned.reply_code} {returned.reply_text}):"
                f" no queue is bound to exchange {returned.exchange!r} with routing key "
                f"{returned.routing_key!r}"))

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
        if not self.confirms and isinstance(reason, ChannelClosed):
            # No publish waits to learn it: say it rather than lose them quietly.
            logger.warning("RabbitMQ closed channel %d, which publishes without confirms "
                           "(%s): what was written on it just before may be lost",
                           self.number, reason)
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
    """Opens a connection's socket as aiormq would (``asyncio.open_connection``), with
    aiotq's :class:`_Reader`, and keeps it: publishers, ackers and consumers use it
    directly. aio-pika hands this opener to aiormq for each (re)connection, so the newest
    socket is the live connection's."""

    def __init__(self) -> None:
        self.socket: _Socket | None = None

    async def create(self, url: Any, **kwargs: Any
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" else None
        loop = asyncio.get_running_loop()
        reader = _Reader(kwargs.pop("limit", 2 ** 16), loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, url.host, url.port, ssl=ssl, **kwargs)
        except OSError as exc:
            raise AMQPConnectionError(*exc.args) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.socket = _Socket(reader, writer)
        return reader, writer


class AMQPConnection:
    """A robust connection with a confirmed publishing pool, one publishing channel without
    confirms (for ``rpc://`` replies), and cached declarations."""

    #: The :meth:`publisher` slot of the channel without publisher confirms.
    UNCONFIRMED = -1

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        self.url = url
        self._pool_size = max(1, int(options.get("publish_channels", 1)))
        self._publish_timeout: float | None = options.get("publish_timeout", 30.0)
        self._connect_timeout: float | None = options.get("connect_timeout", 10.0)
        self._reconnect_interval: float | None = options.get("reconnect_interval")
        self._robust: AbstractRobustConnection | None = None
        self._streams = _Streams()
        self.closed = False
        self._connecting: asyncio.Lock | None = None
        # The pool's confirm channels, then the channel without confirms (UNCONFIRMED).
        self._pool: list[Publisher | None] = [None] * (self._pool_size + 1)
        self._opening = [asyncio.Lock() for _ in self._pool]
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

    def tap(self, channel: AbstractChannel, *, on_delivery: DeliveryHandler) -> None:
        """Hand ``channel``'s deliveries to ``on_delivery`` as they are read (see
        :class:`_Reader`), instead of to its basic_consume callbacks."""
        self.socket().reader.tap(channel.number, on_delivery=on_delivery)

    def socket(self) -> _Socket:
        """The live connection's socket (for a channel just opened on it)."""
        socket = self._streams.socket
        if socket is None:
            raise TransportError("aio-pika did not open the socket through aiotq's opener; "
                                 "this aiotq needs aio-pika 10.2 and aiormq 7.2")
        return socket

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
        """The publisher of ``slot`` in the pool (:meth:`pick`), on a confirm channel; or of
        ``UNCONFIRMED``, one channel without confirms, for transient messages whose sender
        keeps no promise that they arrived (``rpc://`` replies): for those the confirm
        would only keep the broker and the sender busy while the receiver waits."""
        publisher = self._pool[slot]
        if publisher is not None and not publisher.is_closed:
            return publisher
        async with self._opening[slot]:
            publisher = self._pool[slot]
            if publisher is None or publisher.is_closed:
                confirms = slot != self.UNCONFIRMED
                channel = await self.channel(confirms=confirms)
                publisher = self._pool[slot] = Publisher(
                    channel, self.socket(), self._publish_timeout, confirms=confirms)
            return publisher

    async def publish(
        self, publisher: Publisher, body: bytes, properties: Properties, exchange: str,
        routing_key: str, *, mandatory: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm, or until it is written on a publisher
        without confirms (``properties`` as :func:`aiotq._amqp_wire.properties` encodes
        them)."""
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
