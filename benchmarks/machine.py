"""How much of the machine the benchmarks got: a probe taken before each repetition.

On a shared virtual machine the host can take the CPUs away for tens of milliseconds at a
time while the guest still reports them mostly idle (seen on this 2-core machine on
2026-11-26: a busy thread ran 34-36% of the wall-clock time, with stalls of up to 260 ms,
and a 0.5 ms sleep, whose median is 0.6 ms, had a p99 of 35-60 ms). A thread with a CPU
to itself would read close to 100%. Latency percentiles from such a phase measure the
host, not the code, and throughput drops for every framework alike; the report prints
the probe next to the tables so a reader can tell which phase a table comes from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

#: A pause longer than this in a busy loop is time the thread did not run.
STALL = 0.001


@dataclass(frozen=True, slots=True)
class Reading:
    #: The share of wall-clock time a busy thread ran.
    cpu_share: float
    #: The longest time it did not run, in ms.
    longest_stall_ms: float
    #: The 99th percentile of a 0.5 ms sleep, in ms.
    sleep_p99_ms: float

    def describe(self) -> str:
        return (f"busy thread ran {self.cpu_share:.0%} of the time, longest stall "
                f"{self.longest_stall_ms:.0f} ms, 0.5 ms sleep p99 {self.sleep_p99_ms:.1f} ms")


def summarize(wall: float, stalls: Sequence[float], sleeps: Sequence[float]) -> Reading:
    """A reading from a busy loop's duration and stalls, and the durations of short sleeps
    (all in seconds)."""
    ordered = sorted(sleeps)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return Reading(cpu_share=1 - sum(stalls) / wall if wall > 0 else 1.0,
                   longest_stall_ms=max(stalls, default=0.0) * 1e3, sleep_p99_ms=p99 * 1e3)


def probe(busy: float = 2.0, sleeps: int = 1000) -> Reading:
    """Spin for ``busy`` seconds, noting every stall, then time ``sleeps`` 0.5 ms sleeps."""
    clock = time.perf_counter
    start = last = clock()
    stalls = []
    while last - start < busy:
        now = clock()
        if now - last > STALL:
            stalls.append(now - last)
        last = now
    slept = []
    for _ in range(sleeps):
        before = clock()
        time.sleep(0.0005)
        slept.append(clock() - before)
    return summarize(last - start, stalls, slept)
