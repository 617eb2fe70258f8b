"""Who spends the CPU of a round trip (scenario C): the caller, the worker and the broker's
server, in µs of CPU per round trip read from /proc, beside the round trip's p50 and p99.

    python -m benchmarks.round_trip_cpu [--broker redis] [--only aiotq,raw-redis]
                                        [--n 2000] [--repeats 3]

The frameworks take turns within each repeat, so a noisy machine affects them alike. The
last column is the CPU the three processes used over the wall-clock time of the round
trips, in % of one core. CPU spent off a round trip's path (an ack after the result is
stored) shows in the columns but not in the latency while a core is free for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from .adapters import MODULES, Adapter, load
from .amqp_queues import parse_names, per_message, print_table
from .config import REDIS_URL
from .driver import cleanup
from .harness import WorkerProcess, latency_summary
from .machine import process_cpu, server_cpu
from .scenarios import context

#: The broker's server process, as ``pgrep -f`` finds it on this machine.
SERVERS = {"redis": f"redis-server .*:{urlsplit(REDIS_URL).port or 6379}$",
           "amqp": "beam.smp"}
#: How the table names each broker's server.
SERVER_NAMES = {"redis": "Redis", "amqp": "RabbitMQ"}
#: What is measured unless ``--only`` says otherwise: aiotq and the raw client.
DEFAULT_ADAPTERS = {"redis": ["aiotq", "raw-redis"], "amqp": ["aiotq", "raw-aiopika"]}
#: Round trips before the measured ones (connections, caches, the worker's first fetch).
WARMUP = 200


@dataclass(frozen=True, slots=True)
class Cost:
    """One run: latency in µs, and µs of CPU per round trip (None: not readable here)."""

    p50: float
    p99: float
    caller: float
    worker: float
    server: float | None
    #: The CPU the three used over the wall-clock time, in % of one core.
    busy: float

    def row(self) -> tuple[float, float, float, float, float | None, float]:
        return (self.p50, self.p99, self.caller, self.worker, self.server, self.busy)


def group_cpu(leader: int) -> float:
    """Seconds of CPU of every live process in ``leader``'s process group (a worker with
    children, as Celery's and dramatiq's are, is all of them)."""
    found = subprocess.run(["pgrep", "-g", str(leader)], capture_output=True, text=True,
                           check=False).stdout.split()
    total = 0.0
    for pid in found:
        with contextlib.suppress(OSError):  # a child that ended meanwhile
            total += process_cpu(int(pid))
    return total


def cpu_now(worker: int, broker: str) -> tuple[float, float, float | None]:
    """Seconds of CPU so far of this process (the caller), the worker's process group, and
    the broker's server (None when it runs on another machine)."""
    return process_cpu(os.getpid()), group_cpu(worker), server_cpu(SERVERS[broker])


async def measure(name: str, broker: str, n: int, tag: str | None = None) -> Cost:
    """``n`` round trips of framework ``name`` against its own worker process; ``tag``
    names its queue and keys (a fresh one by default)."""
    tag = tag or f"cpu{uuid.uuid4().hex[:8]}"
    adapter: Adapter = load(name)(context(broker, tag, "C"))
    samples: list[float] = []
    try:
        await adapter.open()
        async with WorkerProcess(name, broker, tag, store=True) as worker:
            assert worker.proc is not None
            async with asyncio.timeout(60):  # the first call also waits for the worker
                for i in range(WARMUP):
                    await adapter.call(i)
            before = cpu_now(worker.proc.pid, broker)
            started = time.perf_counter()
            for i in range(n):
                sent = time.perf_counter()
                await adapter.call(i)
                samples.append((time.perf_counter() - sent) * 1e6)
            wall = time.perf_counter() - started
            after = cpu_now(worker.proc.pid, broker)
    finally:
        await adapter.close()
        await cleanup(adapter)
    costs = [per_message(b, a, n) for b, a in zip(before, after, strict=True)]
    caller, workers, server = costs
    assert caller is not None and workers is not None  # this machine's own processes
    summary = latency_summary(samples)
    # µs per round trip, times the round trips, over the wall-clock µs, in %.
    busy = sum(cost or 0.0 for cost in costs) * n / (wall * 1e6) * 100
    return Cost(summary["p50"], summary["p99"], caller, workers, server, busy)


async def main(broker: str, names: list[str], n: int, repeats: int) -> None:
    runs: dict[str, list[tuple[float, float, float, float, float | None, float]]] = {
        name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append((await measure(name, broker, n)).row())
    print(f"{n:,} round trips on {broker}, {repeats} runs, median (min-max)\n")
    print_table(["framework", "p50 µs", "p99 µs", "caller µs CPU", "worker µs CPU",
                 f"{SERVER_NAMES[broker]} µs CPU", "CPU busy, % of a core"], runs)


def parse_adapters(text: str, broker: str) -> list[str]:
    return parse_names(text, [name for name, (_, brokers) in MODULES.items()
                              if broker in brokers], f"frameworks on {broker}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=sorted(SERVERS), default="redis")
    parser.add_argument("--only", help="comma-separated frameworks (default: aiotq and the "
                        "raw client)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    try:
        chosen = (parse_adapters(arguments.only, arguments.broker) if arguments.only
                  else DEFAULT_ADAPTERS[arguments.broker])
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    asyncio.run(main(arguments.broker, chosen, arguments.n, arguments.repeats))
