"""``rpc://`` result backend: states travel back as messages to the caller's reply queue.

As Celery's rpc backend: each client declares one reply queue (named by a UUID) the first
time it calls a task, and puts its name in the message's ``reply_to``; the worker publishes
every state of the task there (``correlation_id`` = task id, the default exchange, no
publisher confirm: see :meth:`RPCBackend.store`). The
client consumes its queue, sorts states by task id, and keeps them in memory for
``get``/``watch`` until ``forget`` or ``result_expires``. Metas travel in Celery's shape
(:func:`~aiotq.message.meta_to_celery`), so Celery clients and workers share them.

Only the client that sent a task sees its states, and only while it runs: nothing is
stored in RabbitMQ. Use the Redis or SQLite backend for results read by other processes.

The reply queue is durable, not exclusive or auto-delete, with ``x-expires`` (60 s by
default, ``broker_transport_options["reply_queue_expires"]``): it outlives a dropped
connection, so states sent while the client reconnects wait for it, and RabbitMQ deletes
it once no client has consumed it for that long. ``close()`` deletes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from .. import _amqp_wire as wire
from .._amqp import (
    TRANSPORT_ERRORS,
    AMQPConnection,
    Arguments,
    Subscription,
    transport_error,
)
from .._waiters import Waiters, wait_any
from ..broker.amqp import AMQPBroker
from ..exceptions import AiotqError, ImproperlyConfigured
from ..message import meta_from_celery, meta_to_celery
from .base import BackendContext, Meta

logger = logging.getLogger("aiotq.results.rpc")

REPLY_QUEUE_EXPIRES = 60.0


@dataclass(slots=True)
class _Record:
    states: deque[Meta]
    touched: float
    #: How many states ever arrived; watchers index by it so a trimmed head is skipped.
    appended: int = 0


class RPCBackend:
    """``rpc://``; see the module docstring."""

    def __init__(self, context: BackendContext) -> None:
        self._context = context
        settings = context.settings
        serializer = context.codecs.serializer(settings.result_serializer)
        self._content_type = serializer.content_type
        self._content_encoding = serializer.content_encoding
        self._accept = context.codecs.content_types(settings.result_accept())
        options = settings.broker_transport_options
        self._queue_expires = float(options.get("reply_queue_expires", REPLY_QUEUE_EXPIRES))
        self._conn: AMQPConnection | None = None
        self._owned = False
        self._queue: str | None = None
        self._subscription: Subscription | None = None
        self._declaring: asyncio.Lock | None = None
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._waiters = Waiters()

    async def connect(self) -> None:
        await self._connection()

    async def _connection(self) -> AMQPConnection:
        if self._conn is not None:
            return self._conn
        broker = self._context.broker
        if isinstance(broker, AMQPBroker):
            self._conn = await broker.connection()
            return self._conn
        url = self._context.settings.broker
        if not url.startswith(("amqp://", "amqps://")):
            raise ImproperlyConfigured(
                f"the rpc:// result backend needs an amqp:// broker, not {url.split('://')[0]}://"
                "; use the Redis or SQLite result backend with this broker")
        conn = AMQPConnection(url, self._context.settings.broker_transport_options)
        await conn.connect()
        self._conn, self._owned = conn, True
        return conn

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.close()
        conn, queue = self._conn, self._queue
        self._queue = None
        if conn is not None and queue is not None and not conn.closed:
            with contextlib.suppress(AiotqError):
                async with conn.scratch() as channel:
                    await channel.queue_delete(queue)
        if conn is not None and self._owned:
            await conn.close()
        self._conn = None

    # -- the calling side --

    async def on_task_call(self, task_id: str) -> str:
        """The reply queue for ``reply_to``; declared, and consumed, on the first call."""
        if self._queue is not None:
            return self._queue
        if self._declaring is None:
            self._declaring = asyncio.Lock()
        async with self._declaring:
            if self._queue is None:
                conn = await self._connection()
                name = str(uuid.uuid4())
                subscription = Subscription(conn, lambda ch: self._consume(ch, name), _nothing)
                await subscription.open()
                self._subscription, self._queue = subscription, name
            return self._queue

    async def _consume(self, channel: AbstractChannel, queue: str) -> None:
        arguments: Arguments = {"x-expires": int(self._queue_expires * 1000)}
        try:
            await channel.queue_declare(queue, durable=True, arguments=arguments)
            # Replies are read as the connection reads them, without a task each.
            conn = await self._connection()
            conn.tap(channel, on_delivery=lambda _, props, body: self._on_reply(props, body))
            await channel.basic_consume(queue, self._on_delivered, no_ack=True)
        except TRANSPORT_ERRORS as exc:
            raise transport_error(f"consuming the reply queue {queue}", exc) from exc

    async def _on_delivered(self, raw: DeliveredMessage) -> None:
        """aiormq's callback, for replies the tap did not take (see AMQPConnection.tap)."""
        self._on_reply(raw.header.properties, raw.body)

    def _on_reply(self, props: wire.Props | Basic.Properties, body: bytes) -> None:
        try:
            meta = self._context.codecs.decode(
                body, props.content_type or self._content_type, self._accept)
            if not isinstance(meta, dict):
                raise TypeError("a result meta must be a mapping")
        except (AiotqError, TypeError) as exc:
            logger.warning("dropped a reply for task %s: %s", props.correlation_id, exc)
            return
        task_id = str(meta.get("task_id") or props.correlation_id or "")
        self._append(task_id, meta_from_celery(meta))

    def _append(self, task_id: str, meta: Meta) -> None:
        now = self._context.clock.time()
        record = self._records.get(task_id)
        if record is None:
            history = self._context.settings.result_state_history
            record = self._records[task_id] = _Record(deque(maxlen=history), now)
        else:
            self._records.move_to_end(task_id)
        record.states.append(meta)
        record.appended += 1
        record.touched = now
        self._expire(now)
        self._waiters.notify_all()

    def _expire(self, now: float) -> None:
        expires = self._context.settings.result_expires
        if not expires:
            return
        records = self._records
        while records:
            task_id, oldest = next(iter(records.items()))
            if oldest.touched + expires > now:
                break
            del records[task_id]

    async def get(self, task_id: str) -> Meta | None:
        record = self._records.get(task_id)
        return record.states[-1] if record is not None and record.states else None

    async def watch(self, task_ids: Sequence[str]) -> AsyncIterator[Meta]:
        seen = dict.fromkeys(task_ids, 0)
        while True:
            waiter = self._waiters.new()
            for task_id in task_ids:
                record = self._records.get(task_id)
                if record is None or record.appended == seen[task_id]:
                    continue
                fresh = min(record.appended - seen[task_id], len(record.states))
                seen[task_id] = record.appended
                for meta in list(record.states)[len(record.states) - fresh:]:
                    yield meta
            if not waiter.done():
                await wait_any(waiter, None)

    async def forget(self, task_id: str) -> None:
        self._records.pop(task_id, None)

    # -- the worker side --

    async def store(self, meta: Meta, *, reply_to: str | None = None) -> None:
        """Send ``meta`` to the caller's reply queue; without one nobody listens."""
        if not reply_to:
            return
        conn = await self._connection()
        properties = wire.properties(
            content_type=self._content_type, content_encoding=self._content_encoding,
            headers=None, delivery_mode=1, priority=None,
            correlation_id=str(meta["task_id"]), reply_to=None,
        )
        # On the broker's connection, without a confirm (as Celery sends replies): a reply
        # is transient, so its confirm would only say that it reached RabbitMQ's memory,
        # while the worker's ack, written after it on the same socket, is read after it
        # anyway; a reply lost with the connection leaves its task unacked, to run again.
        # Waiting for the confirm would only lengthen the caller's round trip. Not
        # mandatory: a caller that has gone away is no error of the task's.
        slot = conn.pick() if self._owned else conn.UNCONFIRMED
        publisher = await conn.publisher(slot)
        await conn.publish(publisher, self._context.encode(meta_to_celery(meta)), properties,
                           "", reply_to, mandatory=False)


def _nothing() -> None:
    """States lost with a channel are in the reply queue still: nothing to undo."""
