"""How much of the machine the benchmarks got: a probe taken before each repetition.

On a shared virtual machine the host can take the CPUs away for tens of milliseconds at a
time while the guest still reports them mostly idle (seen on this 2-core machine on
2026-11-26: a busy thread ran 34-36% of the wall-clock time, with stalls of up to 260 ms,
and a 0.5 ms sleep, whose median is 0.6 ms, had a p99 of 35-60 ms). A thread with a CPU
to itself would read close to 100%. Latency percentiles from such a phase measure the
host, not the code, and throughput drops for every framework alike; the report prints
the probe next to the tables so a reader can tell which phase a table comes from.

A full share does not make a fast machine, though: later that day a busy thread ran 100%
of the time while every loop ran at half its usual speed (10 million Python additions in
1.4-1.5 s) and a redis-py PING took 240-610 µs at p50. So the probe also counts how many
turns the busy loop made per µs of running (the speed of one core for Python), and times a
one-byte ping-pong between two processes over pipes (what waking another process costs,
which every round trip does a few times).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .stats import percentile

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
    #: Turns of the busy loop per µs it ran: the speed of one core for Python.
    turns_per_us: float
    #: A ping-pong between two processes, p50 and p99 in µs (None where fork is missing).
    wakeup_p50_us: float | None = None
    wakeup_p99_us: float | None = None

    def describe(self) -> str:
        text = (f"busy thread ran {self.cpu_share:.0%} of the time, longest stall "
                f"{self.longest_stall_ms:.0f} ms, 0.5 ms sleep p99 {self.sleep_p99_ms:.1f} ms, "
                f"{self.turns_per_us:.1f} loop turns/µs")
        if self.wakeup_p50_us is not None and self.wakeup_p99_us is not None:
            text += (f", process ping-pong p50 {self.wakeup_p50_us:.0f} µs"
                     f" p99 {self.wakeup_p99_us:.0f} µs")
        return text


def summarize(wall: float, stalls: Sequence[float], sleeps: Sequence[float], turns: int = 0,
              pongs: Sequence[float] = ()) -> Reading:
    """A reading from a busy loop's duration, stalls and turns, the durations of short
    sleeps and of ping-pongs (all in seconds)."""
    ran = wall - sum(stalls)
    return Reading(
        cpu_share=ran / wall if wall > 0 else 1.0,
        longest_stall_ms=max(stalls, default=0.0) * 1e3,
        sleep_p99_ms=percentile(sorted(sleeps), 99) * 1e3,
        turns_per_us=turns / (ran * 1e6) if ran > 0 else 0.0,
        wakeup_p50_us=percentile(sorted(pongs), 50) * 1e6 if pongs else None,
        wakeup_p99_us=percentile(sorted(pongs), 99) * 1e6 if pongs else None,
    )


def probe(busy: float = 2.0, sleeps: int = 1000, pongs: int = 1000) -> Reading:
    """Spin for ``busy`` seconds, noting every stall, then time ``sleeps`` 0.5 ms sleeps and
    ``pongs`` ping-pongs with a child process."""
    clock = time.perf_counter
    start = last = clock()
    stalls = []
    turns = 0
    while last - start < busy:
        now = clock()
        turns += 1
        if now - last > STALL:
            stalls.append(now - last)
        last = now
    slept = []
    for _ in range(sleeps):
        before = clock()
        time.sleep(0.0005)
        slept.append(clock() - before)
    return summarize(last - start, stalls, slept, turns, _ping_pong(pongs))


def _ping_pong(count: int) -> list[float]:
    """Round trips of one byte to a forked child and back, 0.5 ms apart (so that the child
    sleeps in between, as an idle worker does)."""
    if not hasattr(os, "fork") or count <= 0:
        return []
    from_parent, to_child = os.pipe()
    from_child, to_parent = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The child never returns into the caller's code, whatever a pipe does.
        try:
            os.close(to_child)
            os.close(from_child)
            while os.read(from_parent, 1):
                os.write(to_parent, b".")
        finally:
            os._exit(0)
    os.close(from_parent)
    os.close(to_parent)
    times = []
    try:
        for _ in range(count):
            before = time.perf_counter()
            os.write(to_child, b".")
            os.read(from_child, 1)
            times.append(time.perf_counter() - before)
            time.sleep(0.0005)
    finally:
        os.close(to_child)
        os.close(from_child)
        os.waitpid(pid, 0)
    return times


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user and system) process ``pid`` has used; OSError once it is gone."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pattern: str) -> float | None:
    """Seconds of CPU of the local process whose command line matches ``pattern``
    (``pgrep -f``), None when there is none here (a server on another machine)."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True,
                           check=False).stdout.split()
    try:
        return process_cpu(int(found[0]))
    except (IndexError, OSError):
        return None
