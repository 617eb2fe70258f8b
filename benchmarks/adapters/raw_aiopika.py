"""The floor on RabbitMQ: aio-pika with no framework at all.

Producer: persistent messages on a channel with publisher confirms (each publish awaits
its confirm; gathered 100 at a time). Consumer: prefetch 100, one ack per message; results
are published to a results queue (B2) or to the caller's ``reply_to`` queue (C).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from ..config import CONCURRENCY
from ..harness import tick
from .base import Adapter, Context

PERSISTENT = aio_pika.DeliveryMode.PERSISTENT


class RawAioPikaAdapter(Adapter):
    name = "raw-aiopika"
    pool = "one consumer, prefetch 100"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.results = f"{self.queue}.results"
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self.replies: dict[str, asyncio.Future[bytes]] = {}
        self.reply_queue = ""

    async def _connect(self, *, confirms: bool) -> AbstractChannel:
        self.connection = await aio_pika.connect(self.ctx.url)
        channel = await self.connection.channel(publisher_confirms=confirms)
        for name in (self.queue, self.results):
            await channel.declare_queue(name, durable=True)
        return channel

    async def open(self) -> None:
        self.channel = await self._connect(confirms=True)
        replies = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        self.reply_queue = replies.name
        await replies.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self.replies.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def send(self, x: int, *, store: bool = False, reply_to: str | None = None,
                   correlation_id: str | None = None) -> Any:
        assert self.channel is not None
        message = aio_pika.Message(str(x).encode(), delivery_mode=PERSISTENT,
                                   headers={"store": int(store)}, reply_to=reply_to,
                                   correlation_id=correlation_id)
        return await self.channel.default_exchange.publish(message, routing_key=self.queue)

    async def call(self, x: int) -> Any:
        correlation_id = uuid.uuid4().hex
        future = self.replies[correlation_id] = asyncio.get_running_loop().create_future()
        await self.send(x, store=True, reply_to=self.reply_queue,
                        correlation_id=correlation_id)
        async with asyncio.timeout(10):
            return int(await future)

    def run_worker(self) -> None:
        asyncio.run(self._consume())

    async def _consume(self) -> None:
        channel = await self._connect(confirms=False)
        await channel.set_qos(prefetch_count=CONCURRENCY)
        queue = await channel.get_queue(self.queue)
        exchange = channel.default_exchange

        async def handle(message: AbstractIncomingMessage) -> None:
            tick()
            if message.reply_to:
                await exchange.publish(
                    aio_pika.Message(message.body, correlation_id=message.correlation_id),
                    routing_key=message.reply_to)
            elif message.headers.get("store"):
                await exchange.publish(aio_pika.Message(message.body,
                                                        delivery_mode=PERSISTENT),
                                       routing_key=self.results)
            await message.ack()

        await queue.consume(handle)
        await asyncio.Future()  # until the driver kills the process

    def amqp_names(self) -> tuple[list[str], list[str]]:
        return [self.queue, self.results], []


ADAPTER = RawAioPikaAdapter
