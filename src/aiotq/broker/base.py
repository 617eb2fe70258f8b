"""The one interface every broker implements.

A broker moves :class:`~aiotq.message.Message` objects from producers to consumers. The
worker and the calling path only ever see these protocols; the concrete class is picked by
the URL's scheme and imported lazily (:func:`broker_class`).

Contract, for every broker:

* ``publish(message, route, eta=...)`` returns once the broker has the message durably (a
  confirm, a write). An ``eta`` further than the worker's horizon may be parked broker-side
  and delivered when due; a nearer one may be delivered at once (the worker holds it).
* ``consumer(queues, ...)`` yields :class:`Delivery` objects from ``fetch(limit, timeout)``.
  Higher ``message.priority`` is delivered first (0-255). Each delivery stays leased to this
  consumer until it is acked, deferred, dead-lettered or released; the consumer keeps those
  leases alive by itself while it runs (heartbeat), and a dead consumer's deliveries go to
  another one after ``lease_timeout``.
* ``Delivery.delivery_count`` is 1 on the first delivery and grows with each redelivery, so
  the worker can dead-letter poison messages.
* Errors of the connection itself are raised as :class:`~aiotq.exceptions.TransportError`
  with the transport's error chained.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..clock import Clock
from ..exceptions import ImproperlyConfigured
from ..message import Message
from ..settings import Settings


@dataclass(frozen=True, slots=True)
class Route:
    """Where a message goes: a queue, and on AMQP an exchange and routing key."""

    queue: str
    exchange: str | None = None
    routing_key: str | None = None
    exchange_type: str = "direct"


@dataclass(frozen=True, slots=True)
class Outgoing:
    message: Message
    route: Route
    eta: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the worker gave up on, with why. ``message`` is None when undecodable."""

    queue: str
    reason: str
    message: Message | None
    raw: bytes | None = None
    time: float = 0.0


@dataclass(slots=True)
class BrokerContext:
    """What a broker gets from the app. ``shared`` is an app-owned dict that the broker
    instances of one app (one per event loop) may use for in-process state."""

    url: str
    settings: Settings
    clock: Clock
    shared: dict[str, Any] = field(default_factory=dict)


class Delivery(Protocol):
    message: Message
    queue: str
    delivery_count: int

    async def ack(self) -> None:
        """Done with it (whatever the outcome): remove it from the broker."""

    async def release(self) -> None:
        """Give it back unprocessed (shutdown): redelivered soon, not counted as a failure."""

    async def defer(self, eta: dt.datetime) -> None:
        """Park it in the broker until ``eta``, then deliver it again (same message)."""

    async def dead_letter(self, reason: str) -> None:
        """Move it aside for good, with ``reason``."""


class Consumer(Protocol):
    async def fetch(self, limit: int, timeout: float) -> list[Delivery]:
        """Up to ``limit`` deliveries; waits up to ``timeout`` seconds for the first."""

    async def close(self) -> None:
        """Stop consuming and release every delivery not yet settled."""


class Producer(Protocol):
    async def publish(self, message: Message, route: Route, *, eta: dt.datetime | None = None
                      ) -> None: ...

    async def publish_many(self, items: Sequence[Outgoing]) -> None:
        """Publish several messages in as few round trips as the transport allows."""


class Broker(Producer, Protocol):
    async def connect(self) -> None:
        """Open connections now (otherwise the first use does). Idempotent."""

    async def close(self) -> None: ...

    def producer(self) -> AbstractAsyncContextManager[Producer]:
        """A producer holding one connection/channel, for many publishes in a row."""

    async def consumer(self, queues: Sequence[str], *, prefetch: int) -> Consumer: ...

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters of ``queue`` (for inspection and tests)."""

    async def purge(self, queue: str) -> int:
        """Remove every waiting message of ``queue``; return how many."""


BROKERS = {
    "memory": "aiotq.broker.memory:MemoryBroker",
    "sqlite": "aiotq.broker.sqlite:SQLiteBroker",
    "redis": "aiotq.broker.redis:RedisBroker",
    "rediss": "aiotq.broker.redis:RedisBroker",
    "amqp": "aiotq.broker.amqp:AMQPBroker",
    "amqps": "aiotq.broker.amqp:AMQPBroker",
}


def load_class(url: str, table: dict[str, str], kind: str) -> Any:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = table.get(scheme)
    if target is None:
        raise ImproperlyConfigured(
            f"no {kind} for URL {url!r}; known schemes: {', '.join(sorted(table))}"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"the {kind} for {scheme}:// cannot be imported ({exc}); "
            "install aiotq with its dependencies"
        ) from exc
    return getattr(module, attr)


def create_broker(context: BrokerContext) -> Broker:
    cls = load_class(context.url, BROKERS, "broker")
    broker: Broker = cls(context)
    return broker

