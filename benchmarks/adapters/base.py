"""The one small interface every framework adapter implements.

An adapter is built the same way in the driver process (which publishes and waits for
results) and in the worker process (which runs the framework's worker), so both agree on
task names, queues and URLs. Every name it creates in a broker contains ``self.queue``
(``bench<tag>``), which is what cleanup deletes.
"""

from __future__ import annotations

import asyncio
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..config import AMQP_URL, REDIS_URL
from ..harness import in_batches

#: Publishes a list of small ints as tasks (one enqueue mode of scenario A).
EnqueueMode = Callable[[Sequence[int]], Awaitable[None]]

#: Far enough that nothing comes due while scenario D runs.
FAR = 86_400.0

T = TypeVar("T")


class NotSupported(Exception):
    """The framework has no such feature on this broker; the table says ``n/a (why)``."""


@dataclass(frozen=True, slots=True)
class Context:
    broker: str
    tag: str
    #: The worker stores results (B2); the driver side ignores it.
    store: bool = False
    #: Polling tuned to 1 ms wherever the framework polls (C, tuned).
    tuned: bool = False

    @property
    def queue(self) -> str:
        return f"bench{self.tag}"

    @property
    def url(self) -> str:
        if self.broker == "redis":
            return REDIS_URL
        if self.broker == "amqp":
            return AMQP_URL
        return f"sqlite:///{self.sqlite_path}"

    @property
    def sqlite_path(self) -> Path:
        return Path(tempfile.gettempdir()) / f"{self.queue}.db"


class Adapter(ABC):
    """One framework on one broker. Producer hooks run in the driver, ``run_worker`` in a
    worker process. Optional hooks raise :class:`NotSupported`."""

    name: ClassVar[str]
    #: How the worker runs its tasks (shown in the table).
    pool: ClassVar[str] = "asyncio, concurrency 100"
    #: Whether waiting for a result or a message polls, so a 1 ms tuning means something.
    polls: ClassVar[bool] = False
    #: Whether ``send_many`` is a real batch API (scenario A's "batch" mode).
    batch_api: ClassVar[bool] = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = ctx.queue

    @classmethod
    def new_loop(cls) -> asyncio.AbstractEventLoop:
        """The event loop the driver and the worker run on."""
        return asyncio.new_event_loop()

    @classmethod
    def run(cls, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to completion on a fresh loop of :meth:`new_loop`'s kind."""
        with asyncio.Runner(loop_factory=cls.new_loop) as runner:
            return runner.run(main)

    # -- producer side --

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (called once before any publish)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect."""

    @abstractmethod
    async def send(self, x: int, *, store: bool = False) -> Any:
        """Publish one task (``delay``); its result is stored only when ``store``."""

    def enqueue_modes(self) -> dict[str, EnqueueMode]:
        """Ways to publish for scenario A; ``delay`` is a gather of 100 ``send`` calls."""
        modes: dict[str, EnqueueMode] = {"delay": self.send_gathered}
        if self.batch_api:
            modes["batch"] = self.send_batched
        return modes

    async def send_batched(self, xs: Sequence[int]) -> None:
        await self.send_many(xs, store=False)

    async def send_gathered(self, xs: Sequence[int]) -> None:
        await in_batches(xs, self.send)

    async def send_many(self, xs: Sequence[int], *, store: bool) -> None:
        """Pre-enqueue for the drain scenarios: the fastest way the framework offers."""
        await in_batches(xs, lambda x: self.send(x, store=store))

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        raise NotSupported("no ETA/delay support")

    @abstractmethod
    async def call(self, x: int) -> Any:
        """Publish one task and wait for its result (scenario C)."""

    # -- worker side --

    @abstractmethod
    def run_worker(self) -> None:
        """Run the framework's worker on ``self.queue`` until the process is killed."""

    # -- cleanup (driver side, also after a killed run) --

    def redis_patterns(self) -> list[str]:
        return [f"*{self.queue}*"]

    def amqp_names(self) -> tuple[list[str], list[str]]:
        """Queues and exchanges to delete."""
        return [self.queue], []
