"""Process plumbing shared by every adapter: the task counter inside a worker, the worker
subprocess seen from the driver, and the numbers (batched timing, percentiles).

A worker reports to its driver with ``@@bench {json}`` lines on stdout; anything else the
framework prints there is ignored, and its stderr goes to a log file under
``benchmarks/results/logs`` so a failure can be read afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import BATCH
from .stats import percentile

MARKER = "@@bench "
RESULTS = Path(__file__).resolve().parent / "results"
LOGS = RESULTS / "logs"


# -- inside a worker process --


class Counter:
    """Counts task executions; reports the first and the ``target``-th one's time.

    Timing from the first task to the last measures the worker's steady rate without its
    start-up (Celery boots in a second, a raw consumer in milliseconds). A lock, because
    thread pools (Celery threads, dramatiq, huey) tick from several threads.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first = 0.0
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self.count += 1
            now = time.monotonic()
            if self.count == 1:
                self.first = now
            if self.count == self.target:
                report(event="done", first=self.first, last=now, count=self.count)
                if os.environ.get("BENCH_EXIT_ON_DONE"):
                    os._exit(0)  # a profiler wrapping this process writes out when it ends


COUNTER = Counter(int(os.environ.get("BENCH_TARGET", "0")))


def tick() -> None:
    """What every benchmark task calls: the no-op's only work."""
    COUNTER.tick()


def noop(x: int) -> int:
    """The benchmark task for thread-pool frameworks: count, return the argument."""
    tick()
    return x


async def anoop(x: int) -> int:
    """The benchmark task for asyncio frameworks."""
    tick()
    return x


def report(**fields: Any) -> None:
    # os.write: one syscall, safe from any thread, never buffered behind a framework's prints.
    os.write(1, (MARKER + json.dumps(fields) + "\n").encode())


# -- seen from the driver --


class WorkerFailed(RuntimeError):
    """The worker exited, or did not report in time; the message ends with its log's tail."""


class WorkerProcess:
    """``async with WorkerProcess(...) as w``: one framework worker in its own process
    group, killed (group and all) on exit whatever happened."""

    def __init__(self, adapter: str, broker: str, tag: str, *, target: int = 0,
                 store: bool = False, tuned: bool = False) -> None:
        self.argv = [sys.executable, "-m", "benchmarks.driver", "worker", "--adapter", adapter,
                     "--broker", broker, "--tag", tag]
        if store:
            self.argv.append("--store")
        if tuned:
            self.argv.append("--tuned")
        self.env = {**os.environ, "BENCH_TARGET": str(target), "PYTHONUNBUFFERED": "1"}
        LOGS.mkdir(parents=True, exist_ok=True)
        self.tag = tag
        self.log = LOGS / f"{adapter}-{broker}-{tag}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WorkerProcess:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=asyncio.subprocess.PIPE, stderr=log, env=self.env,
                start_new_session=True)
        self._reader = asyncio.create_task(self._read())
        # run.py kills these process groups if it has to kill this driver on a timeout.
        with (LOGS / f"{self.tag}.pids").open("a") as pids:
            pids.write(f"{self.proc.pid}\n")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.kill()

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(MARKER):
                await self._events.put(json.loads(line[len(MARKER):]))
        await self._events.put({"event": "exit"})

    async def wait_done(self, timeout: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                event = await self._events.get()
        except TimeoutError:
            raise WorkerFailed(f"no report within {timeout:.0f}s; {self.tail()}") from None
        if event["event"] != "done":
            raise WorkerFailed(f"worker exited early; {self.tail()}")
        return event

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(text[-lines:]) or "empty log"

    def rss(self) -> int:
        """Resident memory of the worker and any children it forked (bytes)."""
        import psutil  # a benchmark-only dependency, which the test suite goes without

        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    async def settled_rss(self, quiet: float = 3.0, limit: float = 120.0) -> int:
        """RSS once it has stopped growing by more than 1% for ``quiet`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        best, since = self.rss(), loop.time()
        while loop.time() < deadline and loop.time() - since < quiet:
            await asyncio.sleep(0.5)
            now = self.rss()
            if now > best * 1.01:
                best, since = now, loop.time()
        return self.rss()

    async def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if proc.returncode is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the worker forked and left behind
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# -- numbers --


async def in_batches(xs: Sequence[int], send: Callable[[int], Awaitable[object]],
                     size: int = BATCH) -> None:
    """``send`` every x, ``size`` at a time in one gather (what an app's hot loop does)."""
    for start in range(0, len(xs), size):
        await asyncio.gather(*(send(x) for x in xs[start:start + size]))


def chunks(xs: Sequence[int], size: int = BATCH) -> list[Sequence[int]]:
    return [xs[start:start + size] for start in range(0, len(xs), size)]


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50": percentile(ordered, 50), "p90": percentile(ordered, 90),
            "p99": percentile(ordered, 99), "mean": statistics.fmean(ordered),
            "samples": float(len(ordered))}
