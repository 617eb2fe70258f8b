"""``python -m benchmarks.run [--quick]``: every scenario, every framework, every broker.

Each measurement runs in its own driver process with a timeout; frameworks are interleaved
within each repetition (in a rotating order) so that their ratios hold on a noisy machine.
Writes ``benchmarks/results/latest.md`` (and ``latest.json``) and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import machine, report
from .adapters import MODULES, SCENARIOS, load
from .config import AMQP_URL, FULL, QUICK, REDIS_URL, Sizes
from .harness import LOGS, RESULTS

#: (broker, scenario) in the order they run within a repetition.
PLAN: list[tuple[str, str]] = [
    (broker, scenario)
    for broker in ("redis", "amqp", "sqlite")
    for scenario in ("A:delay", "A:batch", "A:producer", "B1", "B2", "C", "C-tuned", "D")
    if not (scenario == "D" and broker != "redis")
]
QUICK_PLAN = [(b, s) for b, s in PLAN if s in ("A:delay", "B1", "C")]

PACKAGES = ("aiotq", "celery", "kombu", "taskiq", "taskiq-redis", "taskiq-aio-pika", "arq",
            "saq", "streaq", "coredis", "dramatiq", "huey", "redis", "hiredis", "aio-pika")


def _kill_leftovers(tag: str) -> None:
    pids = LOGS / f"{tag}.pids"
    with contextlib.suppress(OSError):
        for line in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(line), signal.SIGKILL)
        pids.unlink()


def _driver(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.driver", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def measure(adapter: str, broker: str, scenario: str, quick: bool, sizes: Sizes
            ) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    args = ["--adapter", adapter, "--broker", broker, "--tag", tag]
    try:
        done = _driver("measure", *args, "--scenario", scenario, *(["--quick"] * quick),
                       timeout=sizes.timeout + 60)
        lines = done.stdout.strip().splitlines()
        if lines and lines[-1].startswith("{"):
            result: dict[str, Any] = json.loads(lines[-1])
        else:
            tail = " | ".join(done.stderr.strip().splitlines()[-2:])
            result = {"ok": False, "error": f"driver exited {done.returncode}: {tail}"[:300]}
    except subprocess.TimeoutExpired:
        result = {"ok": False, "error": f"timed out after {sizes.timeout + 60:.0f}s"}
        with contextlib.suppress(subprocess.TimeoutExpired):
            _driver("cleanup", *args, timeout=60)
    finally:
        _kill_leftovers(tag)
    return result


def _summary(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        if "na" in result:
            return f"n/a: {result['na']}"
        return f"FAILED: {result.get('error')}"
    values = result["values"]
    if "p50" in values:
        return f"p50 {values['p50']:.2f} ms, p99 {values['p99']:.2f} ms"
    if "delta_mb" in values:
        return f"+{values['delta_mb']:.1f} MB, due {values['rate']:,.0f}/s"
    return f"{values['rate']:,.0f} tasks/s"


def run(adapters: Sequence[str], plan: Sequence[tuple[str, str]], sizes: Sizes, quick: bool,
        missing: dict[str, str], readings: list[machine.Reading]) -> list[dict[str, Any]]:
    """Every measurement of ``plan``; a probe of the machine before each repetition goes to
    ``readings``."""
    records: list[dict[str, Any]] = []
    settled: set[tuple[str, str, str]] = set()  # n/a once is n/a always
    for rep in range(sizes.repeats):
        readings.append(machine.probe())
        print(f"[{rep + 1}/{sizes.repeats}] machine: {readings[-1].describe()}",
              file=sys.stderr, flush=True)
        for broker, scenario in plan:
            runnable = [a for a in adapters
                        if broker in MODULES[a][1] and scenario in SCENARIOS.get(a, (scenario,))]
            shift = rep % len(runnable) if runnable else 0
            for adapter in runnable[shift:] + runnable[:shift]:
                key = (broker, scenario, adapter)
                if key in settled:
                    continue
                started = time.monotonic()
                if adapter in missing:
                    result = {"ok": False, "na": missing[adapter]}
                else:
                    result = measure(adapter, broker, scenario, quick, sizes)
                if "na" in result:
                    settled.add(key)
                seconds = time.monotonic() - started
                records.append({"rep": rep, "broker": broker, "scenario": scenario,
                                "adapter": adapter, "seconds": seconds, **result})
                print(f"[{rep + 1}/{sizes.repeats}] {broker:6} {scenario:10} {adapter:12} "
                      f"{_summary(result)} ({seconds:.0f}s)", file=sys.stderr, flush=True)
    return records


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _servers() -> str:
    parts = []
    with contextlib.suppress(Exception):
        import redis

        info = redis.Redis.from_url(REDIS_URL).info("server")
        parts.append(f"Redis {info['redis_version']}")
    with contextlib.suppress(Exception):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        version = connection._impl.server_properties["version"]
        parts.append(f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}")
        connection.close()
    return ", ".join(parts) or "unknown"


def _versions() -> str:
    found = []
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def _aiotq_revision() -> str:
    """Which aiotq was measured: its git commit (and whether src had edits), or
    ``BENCH_AIOTQ_REV`` when it runs from an exported snapshot."""
    if os.environ.get("BENCH_AIOTQ_REV"):
        return os.environ["BENCH_AIOTQ_REV"]
    import aiotq

    where = Path(aiotq.__file__).parent
    try:
        rev = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"from {where}"
    return f"{rev}{' + uncommitted edits' if dirty else ''}"


def header(sizes: Sizes, quick: bool, readings: Sequence[machine.Reading]) -> list[str]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    mode = "quick (`make bench-quick`)" if quick else "full (`make bench`)"
    return [
        "# aiotq benchmarks", "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; run: {mode}",
        f"- Machine: {os.cpu_count()} cores, {_cpu_model()}, {memory:.0f} GiB; "
        f"Python {platform.python_version()} on {platform.system()}",
        "- How much of the machine the run got, and how fast it was, before each repetition "
        "(`benchmarks/machine.py`; a thread with a CPU to itself runs close to 100%; loop "
        "turns and the ping-pong compare runs on this machine, not across machines): "
        + "; ".join(reading.describe() for reading in readings),
        f"- Servers (loopback): {_servers()}",
        f"- aiotq revision: {_aiotq_revision()}",
        f"- Versions: {_versions()}",
        f"- Sizes: A {sizes.enqueue:,} tasks; B {sizes.drain:,} tasks; C {sizes.round_trips} "
        f"calls after {sizes.warmup} warm-up calls, at most {sizes.round_trip_budget:.0f} s; "
        f"D {sizes.etas:,} ETAs one day out, then {sizes.due:,} due tasks; "
        f"{sizes.repeats} run(s) of each, frameworks interleaved.",
        "- Reproduce: `make bench` (or `make bench-quick`); one framework: "
        "`python -m benchmarks.run --only aiotq,celery`.",
        "- Every worker is one process; tasks are no-ops taking a small int. Drain rates run "
        "from the worker's first task to its last (start-up excluded).", "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run, a subset")
    parser.add_argument("--only", help="comma-separated frameworks (default: all)")
    parser.add_argument("--brokers", help="comma-separated brokers (default: all)")
    parser.add_argument("--scenarios", help="comma-separated scenarios, e.g. B1,C")
    parser.add_argument("--repeats", type=int, help="runs of each measurement")
    parser.add_argument("--render", metavar="JSON", help="only re-render a saved latest.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        print(report.render(saved["records"], saved["adapters"], saved["pools"],
                            saved["header"]))
        return
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    adapters = args.only.split(",") if args.only else list(MODULES)
    plan = QUICK_PLAN if args.quick else PLAN
    if args.brokers:
        plan = [(b, s) for b, s in plan if b in args.brokers.split(",")]
    if args.scenarios:
        plan = [(b, s) for b, s in plan if s in args.scenarios.split(",")]
    pools: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in adapters:
        try:
            pools[name] = load(name).pool
        except ImportError as exc:
            missing[name] = f"not installed: {exc}"[:120]
    readings: list[machine.Reading] = []
    records = run(adapters, plan, sizes, args.quick, missing, readings)
    head = header(sizes, args.quick, readings)
    text = report.render(records, adapters, pools, head)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(text + "\n")
    saved = {"header": head, "adapters": adapters, "pools": pools, "records": records}
    (RESULTS / "latest.json").write_text(json.dumps(saved, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
