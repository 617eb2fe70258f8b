"""The scenarios, written once against the adapter interface.

A  enqueue ``n`` tasks, by each of the adapter's enqueue modes (tasks/s).
B1 drain ``n`` pre-enqueued tasks, results not stored; B2 the same, results stored
   (tasks/s from the worker's first task to its ``n``-th).
C  ``n`` sequential ``delay()`` + ``get()`` round trips (ms percentiles), with the
   framework's defaults and with polling tuned to 1 ms where it polls.
D  a worker holding ``etas`` far ETAs: its RSS before and after, and meanwhile the drain
   rate of ``due`` tasks that are due now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .adapters import Adapter, Context
from .adapters.base import FAR, NotSupported
from .config import Sizes
from .harness import WorkerProcess, latency_summary

MB = 1024 * 1024


def _worker(adapter: Adapter, *, target: int = 0, store: bool = False,
            tuned: bool = False) -> WorkerProcess:
    ctx = adapter.ctx
    return WorkerProcess(type(adapter).name, ctx.broker, ctx.tag, target=target, store=store,
                         tuned=tuned)


def _drain_rate(event: dict[str, Any]) -> float:
    # n tasks ran in n - 1 intervals between the first and the last.
    return (event["count"] - 1) / max(event["last"] - event["first"], 1e-9)


async def enqueue(adapter: Adapter, sizes: Sizes, mode: str) -> dict[str, float]:
    modes = adapter.enqueue_modes()
    if mode not in modes:
        raise NotSupported(f"no {mode} API")
    send = modes[mode]
    await send(list(range(100)))  # connects, warms caches; not timed
    xs = list(range(sizes.enqueue))
    started = time.perf_counter()
    await send(xs)
    return {"rate": len(xs) / (time.perf_counter() - started)}


async def drain(adapter: Adapter, sizes: Sizes, store: bool) -> dict[str, float]:
    n = sizes.drain
    await adapter.send_many(list(range(n)), store=store)
    async with _worker(adapter, target=n, store=store) as worker:
        event = await worker.wait_done(sizes.timeout)
    return {"rate": _drain_rate(event)}


async def round_trip(adapter: Adapter, sizes: Sizes, tuned: bool) -> dict[str, float]:
    if tuned and not type(adapter).polls:
        raise NotSupported("pushes, nothing to tune")
    samples: list[float] = []
    async with _worker(adapter, store=True, tuned=tuned):
        async with asyncio.timeout(60):  # the first call also waits for the worker to boot
            await adapter.call(0)
        async with asyncio.timeout(sizes.round_trip_budget + 60):
            for i in range(sizes.warmup):
                await adapter.call(i)
            deadline = time.perf_counter() + sizes.round_trip_budget
            for i in range(sizes.round_trips):
                started = time.perf_counter()
                await adapter.call(i)
                now = time.perf_counter()
                samples.append((now - started) * 1000)
                if now > deadline:
                    break
    return latency_summary(samples)


async def hold_etas(adapter: Adapter, sizes: Sizes) -> dict[str, float]:
    async with _worker(adapter, target=sizes.due) as worker:
        idle = await worker.settled_rss()
        await adapter.send_later(list(range(sizes.etas)), FAR)
        held = await worker.settled_rss(quiet=5.0)
        await adapter.send_many(list(range(sizes.due)), store=False)
        event = await worker.wait_done(sizes.timeout)
        after = worker.rss()
    return {"idle_mb": idle / MB, "held_mb": held / MB, "delta_mb": (held - idle) / MB,
            "after_mb": after / MB, "rate": _drain_rate(event)}


async def measure(adapter: Adapter, sizes: Sizes, scenario: str) -> dict[str, float]:
    """Run one scenario (``A:<mode>``, ``B1``, ``B2``, ``C``, ``C-tuned``, ``D``)."""
    if scenario.startswith("A:"):
        return await enqueue(adapter, sizes, scenario[2:])
    if scenario in ("B1", "B2"):
        return await drain(adapter, sizes, store=scenario == "B2")
    if scenario in ("C", "C-tuned"):
        return await round_trip(adapter, sizes, tuned=scenario == "C-tuned")
    if scenario == "D":
        return await hold_etas(adapter, sizes)
    raise ValueError(f"unknown scenario {scenario!r}")


def context(broker: str, tag: str, scenario: str) -> Context:
    """The producer's context: the tuned flag matters to its polling too."""
    return Context(broker, tag, store=scenario in ("B2", "C", "C-tuned"),
                   tuned=scenario == "C-tuned")
