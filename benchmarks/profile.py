"""Where aiotq spends its time in a scenario: py-spy samples the worker (B1, B2) or the
producer (A, C), then the hottest functions are listed as ``file:function  self%  total%``.

    python -m benchmarks.profile --broker amqp --scenario B1 [--n 30000]
    python -m benchmarks.profile --broker redis --scenario C --worker [--n 5000]

``--worker`` samples the worker's side of the round trips of C instead of the caller's.

The raw collapsed stacks stay in ``benchmarks/results/profile-<broker>-<scenario>.txt``
(open them in speedscope, or ``flamegraph.pl``) for a closer look.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from .adapters import Context, load
from .driver import cleanup
from .harness import RESULTS, WorkerProcess


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)".
    function, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{function}"


def summarize(collapsed: Path, top: int = 25) -> str:
    """Self and inclusive share of samples per ``file:function`` (py-spy leaves out idle
    samples, so a loop waiting in select() does not count)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_frame_name(frame) for frame in stack.split(";")]
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "no samples"
    lines = [f"{total} busy samples", "", "self%  total%  file:function"]
    for name, count in own.most_common(top):
        lines.append(f"{100 * count / total:5.1f}  {100 * inclusive[name] / total:6.1f}  {name}")
    lines += ["", "inclusive (aiotq frames only):"]
    ours = [(n, c) for n, c in inclusive.most_common() if n.startswith("aiotq/")][:top]
    lines += [f"{100 * c / total:6.1f}  {n}" for n, c in ours]
    return "\n".join(lines)


def _spy(out: Path) -> list[str]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [spy, "record", "--rate", "250", "--format", "raw", "--nonblocking", "-o", str(out),
            "--"]


async def profile_worker(broker: str, scenario: str, n: int, out: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    store = scenario == "B2"
    adapter = load("aiotq")(Context(broker, tag, store=store))
    try:
        await adapter.open()
        await adapter.send_many(list(range(n)), store=store)
        await adapter.close()
        worker = WorkerProcess("aiotq", broker, tag, target=n, store=store)
        worker.argv = [*_spy(out), *worker.argv]
        worker.env["BENCH_EXIT_ON_DONE"] = "1"  # py-spy writes its file when the child ends
        async with worker:
            event = await worker.wait_done(600)
            assert worker.proc is not None
            await asyncio.wait_for(worker.proc.wait(), 60)
        rate = (event["count"] - 1) / (event["last"] - event["first"])
        print(f"{scenario} on {broker}: {rate:,.0f} tasks/s while sampled")
    finally:
        await cleanup(adapter)


async def produce(broker: str, scenario: str, n: int, tag: str) -> None:
    """The producer side, run under py-spy by :func:`profile_producer`."""
    adapter = load("aiotq")(Context(broker, tag, store=scenario == "C"))
    await adapter.open()
    started = time.perf_counter()
    if scenario == "C":
        worker = WorkerProcess("aiotq", broker, tag, store=True)
        async with worker:
            await adapter.call(0)
            started = time.perf_counter()
            for i in range(n):
                await adapter.call(i)
    else:
        await adapter.enqueue_modes()[scenario.partition(":")[2] or "delay"](list(range(n)))
    elapsed = time.perf_counter() - started
    print(f"{scenario} on {broker}: {n / elapsed:,.0f} per second while sampled")
    await adapter.close()


async def profile_round_trip_worker(broker: str, n: int, out: Path) -> None:
    """Sample the worker (py-spy attached to it) while this process makes ``n`` round trips."""
    tag = uuid.uuid4().hex[:10]
    adapter = load("aiotq")(Context(broker, tag, store=True))
    try:
        await adapter.open()
        async with WorkerProcess("aiotq", broker, tag, store=True) as worker:
            assert worker.proc is not None
            await adapter.call(0)
            # Attached by pid: _spy's arguments without the "--" that precedes a command.
            spy = await asyncio.create_subprocess_exec(
                *_spy(out)[:-1], "--pid", str(worker.proc.pid))
            await asyncio.sleep(1)  # py-spy attaching
            started = time.perf_counter()
            for i in range(n):
                await adapter.call(i)
            elapsed = time.perf_counter() - started
            spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            await asyncio.wait_for(spy.wait(), 60)
        print(f"C on {broker}: {n / elapsed:,.0f} round trips per second while sampled")
        await adapter.close()
    finally:
        await cleanup(adapter)


async def profile_producer(broker: str, scenario: str, n: int, out: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    try:
        proc = await asyncio.create_subprocess_exec(
            *_spy(out), sys.executable, "-m", "benchmarks.profile", "--produce", "--broker",
            broker, "--scenario", scenario, "--n", str(n), "--tag", tag)
        await asyncio.wait_for(proc.wait(), 600)
    finally:
        await cleanup(load("aiotq")(Context(broker, tag)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--broker", default="redis")
    parser.add_argument("--scenario", default="B1", help="B1, B2, A:delay, A:batch, C")
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--worker", action="store_true",
                        help="C only: sample the worker instead of the caller")
    parser.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        asyncio.run(produce(args.broker, args.scenario, args.n, args.tag))
        return
    if args.worker and args.scenario != "C":
        parser.error("--worker goes with --scenario C (B1 and B2 sample the worker anyway)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"profile-{args.broker}-{args.scenario.replace(':', '-')}.txt"
    if args.worker:
        out = out.with_name(f"profile-{args.broker}-C-worker.txt")
        asyncio.run(profile_round_trip_worker(args.broker, args.n, out))
    else:
        side = profile_worker if args.scenario in ("B1", "B2") else profile_producer
        asyncio.run(side(args.broker, args.scenario, args.n, out))
    print(summarize(out))
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
