"""The worker: consume, hold ETAs, run within the concurrency limit, shut down cleanly.

It orchestrates; what happens to one message is execution.py's job, the heap is eta.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._waiters import wait_any
from .broker.base import Consumer, Delivery
from .eta import EtaHeap
from .execution import Executor, check

if TYPE_CHECKING:
    from .app import App

logger = logging.getLogger("aiotq.worker")


class Worker:
    """Consumes ``queues`` of ``app`` and runs their tasks.

    ``await worker.run()`` until ``worker.stop()`` (warm: running tasks finish up to
    ``worker_shutdown_timeout``, held messages go back) or, with ``burst=True``, until the
    queues are empty. ``async with app.Worker(...)`` runs it in the background.
    """

    def __init__(self, app: App, queues: Sequence[str] | None = None, *,
                 concurrency: int | None = None, prefetch_multiplier: int | None = None,
                 threads: int | None = None, burst: bool = False,
                 poll_interval: float = 0.5, hostname: str | None = None) -> None:
        conf = app.conf
        self.app = app
        self.queues = list(queues or [conf.task_default_queue])
        self.concurrency = concurrency or conf.worker_concurrency
        multiplier = prefetch_multiplier or conf.worker_prefetch_multiplier
        self.capacity = max(self.concurrency, self.concurrency * multiplier)
        self.threads = threads or conf.worker_threads
        self.burst = burst
        self.poll_interval = poll_interval
        self.hostname = hostname or f"aiotq@{socket.gethostname()}.{os.getpid()}"
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._slot_freed: asyncio.Event | None = None
        self._held: EtaHeap[Delivery] = EtaHeap()
        self._heap_changed: asyncio.Future[None] | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._runner: asyncio.Task[None] | None = None
        self._executor: Executor | None = None
        self.processed = 0

    # -- lifecycle --

    async def run(self) -> None:
        """Consume until stopped (or drained, in burst mode); then shut down warm.

        A ``stop()`` that came before ``run()`` is honoured: it returns at once."""
        self._slot_freed = asyncio.Event()
        if self._stopping.is_set():
            self._slot_freed.set()
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._executor = Executor(self.app, self.threads, self.hostname)
        await self.app.connect()
        consumer = await self.app.broker.consumer(self.queues, prefetch=self.capacity)
        timer = asyncio.create_task(self._eta_timer())
        logger.info("worker %s consuming %s (concurrency %d)", self.hostname,
                    ",".join(self.queues), self.concurrency)
        try:
            await self._consume(consumer)
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            await self._shutdown(consumer)
            # Fresh primitives: a worker may run again, on another event loop.
            self._stopping, self._idle = asyncio.Event(), asyncio.Event()

    def stop(self) -> None:
        """Ask for a warm shutdown (returns at once; ``run()`` finishes soon after)."""
        self._stopping.set()
        if self._slot_freed is not None:
            self._slot_freed.set()

    async def __aenter__(self) -> Worker:
        self._runner = asyncio.create_task(self.run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._runner is not None:
            await self._runner

    async def join(self, timeout: float | None = None) -> None:
        """Wait until every fetched and held message is settled (for tests)."""
        async with asyncio.timeout(timeout):
            while self._inflight or len(self._held):
                self._idle.clear()
                await self._idle.wait()

    # -- consuming --

    async def _consume(self, consumer: Consumer) -> None:
        assert self._slot_freed is not None
        # Fetch in batches: while tasks are in flight, wait until a quarter of the capacity
        # is free rather than paying a broker round trip per freed slot.
        low_water = max(1, self.capacity // 4)
        while not self._stopping.is_set():
            limit = self.capacity - len(self._inflight)
            if limit < low_water and self._inflight:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                batch = await consumer.fetch(limit, self.poll_interval)
            except Exception as exc:
                logger.warning("fetch failed (%s); retrying", exc)
                await asyncio.sleep(min(self.poll_interval, 1.0))
                continue
            if not batch and self.burst and not self._inflight and not len(self._held):
                logger.info("burst mode: queues drained, stopping")
                return
            for delivery in batch:
                await self._admit(delivery)
            if batch:
                # The tasks just admitted start (and send what they store) before the next
                # fetch goes out ahead of them.
                await asyncio.sleep(0)

    async def _admit(self, delivery: Delivery) -> None:
        assert self._executor is not None
        problem = check(delivery, self.app.conf.task_max_deliveries)
        if problem is not None:
            self._spawn(self._executor.dead_letter(delivery, problem))
            return
        eta = delivery.message.eta
        now = self.app.clock.time()
        if eta is None or eta.timestamp() <= now:
            self._spawn(self._execute(delivery))
            return
        conf = self.app.conf
        # A second of slack: an ETA exactly at the horizon (microseconds past it after
        # rounding) is held, not bounced back to the broker.
        far = eta.timestamp() - now > conf.worker_eta_horizon + 1.0
        if far or len(self._held) >= conf.worker_max_held:
            self._spawn(delivery.defer(eta))
            return
        if self._held.push(eta.timestamp(), delivery) and self._heap_changed is not None:
            if not self._heap_changed.done():
                self._heap_changed.set_result(None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self.processed += 1
        if not self._inflight:
            self._idle.set()
        if self._slot_freed is not None:
            self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("settling a message failed: %r (it will be redelivered)",
                         task.exception())

    async def _execute(self, delivery: Delivery) -> None:
        assert self._semaphore is not None and self._executor is not None
        if self.capacity == self.concurrency:  # nothing prefetched beyond the slots
            await self._executor.handle(delivery)
            return
        async with self._semaphore:
            if self._stopping.is_set():
                # Prefetched but not started: it goes back for another worker.
                await delivery.release()
                return
            await self._executor.handle(delivery)

    async def _eta_timer(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self.app.clock
        while True:
            for delivery in self._held.pop_due(clock.time()):
                self._spawn(self._execute(delivery))
            self._heap_changed = loop.create_future()
            due = self._held.next_due()
            sleeper = asyncio.ensure_future(clock.sleep_until(due)) if due is not None else None
            await wait_any(self._heap_changed, sleeper)

    # -- shutdown --

    async def _shutdown(self, consumer: Consumer) -> None:
        held = self._held.drain()
        for delivery in held:
            await _quietly(delivery.release())
        if self._inflight:
            logger.info("waiting up to %ss for %d running task(s)",
                        self.app.conf.worker_shutdown_timeout, len(self._inflight))
            _, pending = await asyncio.wait(list(self._inflight),
                                            timeout=self.app.conf.worker_shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await _quietly(consumer.close())
        if self._executor is not None:
            self._executor.close()
        logger.info("worker %s stopped", self.hostname)


async def _quietly(awaitable: Awaitable[None]) -> None:
    try:
        await awaitable
    except Exception as exc:
        logger.warning("during shutdown: %r", exc)
