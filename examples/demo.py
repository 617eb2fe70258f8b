"""A tour of aiotq's calling API against a real worker process, on the SQLite broker.

Run it with ``make demo`` (or ``.venv/bin/python examples/demo.py``). It starts
``aiotq worker -A examples.demo_tasks:app`` on a SQLite file in a temporary folder, walks
through the examples of Celery's "Calling Tasks" guide with ``await``, then stops the
worker with SIGTERM (a warm shutdown) and removes the file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# ``python examples/demo.py`` puts examples/ on sys.path, but the worker imports the tasks
# as examples.demo_tasks; importing them under that same name keeps the task names equal.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiotq import App, AsyncResult, chain, group, states  # noqa: E402
from aiotq.results.base import Meta  # noqa: E402
from examples.demo_tasks import (  # noqa: E402
    add,
    app,
    double,
    echo,
    error_handler,
    fail,
    hello,
    mul,
)

TIMEOUT = 15.0
STARTED = time.monotonic()


def section(title: str) -> None:
    print(f"\n== {title}")


def show(call: str, value: Any) -> None:
    print(f"  {call:<58} -> {value!r}")


def worker_command(url: str) -> list[str]:
    script = Path(sys.executable).parent / "aiotq"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "aiotq.cli"]
    return [*head, "worker", "-A", "examples.demo_tasks:app", "-Q", "celery,priority.high",
            "-c", "8", "-l", "info", "-b", url]


async def basics() -> None:
    section("delay, apply_async, calling, signatures")
    r = await add.delay(2, 2)
    show("await add.delay(2, 2)", await r.get(timeout=TIMEOUT))
    r = await add.apply_async((2,), {"y": 3})
    show("await add.apply_async((2,), {'y': 3})", await r.get(timeout=TIMEOUT))
    show("await add(2, 2)  # runs here, nothing sent", await add(2, 2))
    r = await add.s(2, 2).apply_async()
    show("await add.s(2, 2).apply_async()", await r.get(timeout=TIMEOUT))
    r = await mul.delay(6, 7)
    show("await mul.delay(6, 7)  # a def task, in a thread", await r.get(timeout=TIMEOUT))


async def timing() -> None:
    section("countdown, eta, expires")
    start = time.monotonic()
    r = await add.apply_async((2, 2), countdown=1.5)
    value = await r.get(timeout=TIMEOUT)
    show(f"add.apply_async((2, 2), countdown=1.5) after {time.monotonic() - start:.1f}s", value)
    start = time.monotonic()
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    r = await add.apply_async((3, 3), eta=eta)
    value = await r.get(timeout=TIMEOUT)
    show(f"add.apply_async((3, 3), eta=now + 1s) after {time.monotonic() - start:.1f}s", value)
    r = await add.apply_async((10, 10), expires=60)
    show("add.apply_async((10, 10), expires=60)", await r.get(timeout=TIMEOUT))
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    r = await add.apply_async((10, 10), expires=tomorrow)
    show("add.apply_async((10, 10), expires=tomorrow)", await r.get(timeout=TIMEOUT))
    r = await add.apply_async((1, 1), countdown=1, expires=0.5)
    exc = await r.get(timeout=TIMEOUT, propagate=False)
    show(f"add.apply_async((1, 1), countdown=1, expires=0.5): {r.state}", exc)
    assert r.state == states.REVOKED


async def links() -> None:
    section("link and link_error")
    r = await add.apply_async((2, 2), link=add.s(16))
    parent = await r.get(timeout=TIMEOUT)
    child = await r.children[0].get(timeout=TIMEOUT)
    show("add.apply_async((2, 2), link=add.s(16))", f"{parent}, then callback {child}")
    r = await add.apply_async((2, 2), link=[add.s(16), double.s()])
    await r.get(timeout=TIMEOUT)
    callbacks = [await c.get(timeout=TIMEOUT) for c in r.children]
    show("add.apply_async((2, 2), link=[add.s(16), double.s()])", callbacks)
    errback = error_handler.s()
    errback_id = errback.freeze()  # a known id, so we can read the errback's own result
    r = await fail.apply_async(("the disk is full",), link_error=errback)
    exc = await r.get(timeout=TIMEOUT, propagate=False)
    show("fail.apply_async(..., link_error=error_handler.s())", exc)
    report = await app.AsyncResult(errback_id).get(timeout=TIMEOUT)
    print("  error_handler's result:")
    print("\n".join(f"    | {line}" for line in report.strip().splitlines()))


async def progress() -> None:
    section("on_message: every state change, live")
    start = time.monotonic()

    def on_raw_message(body: Meta) -> None:
        print(f"  +{time.monotonic() - start:.1f}s {body['status']:<8} {body['result']!r}")

    r = await hello.apply_async((4, 6))
    print(" ", await r.get(timeout=TIMEOUT, on_message=on_raw_message, propagate=False))


async def canvas() -> None:
    section("group and chain")
    numbers = [(2, 2), (4, 4), (8, 8), (16, 16)]
    res = await group(add.s(i, j) for i, j in numbers).apply_async()
    show("group(add.s(i, j) for i, j in numbers)", await res.get(timeout=TIMEOUT))
    r = await (add.s(2, 2) | add.s(4) | mul.s(10)).apply_async()
    show("(add.s(2, 2) | add.s(4) | mul.s(10))", await r.get(timeout=TIMEOUT))
    r = await chain(add.s(1, 1), double.s()).apply_async()
    show("chain(add.s(1, 1), double.s())", await r.get(timeout=TIMEOUT))


async def serializers() -> None:
    section("serializers (the worker accepts: " + ", ".join(app.conf.accept_content) + ")")
    value = {"when": dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "items": [1, 2.5, "three"]}
    for name in ("json", "msgpack", "yaml", "pickle"):
        if name not in app.conf.accept_content:
            print(f"  {name:<8} skipped: not in accept_content (a worker refuses it unless "
                  "enabled)")
            continue
        r = await echo.apply_async((value,), serializer=name)
        show(f"echo.apply_async((value,), serializer={name!r})", await r.get(timeout=TIMEOUT))


async def compression() -> None:
    section("compression")
    text = "aiotq " * 2000
    for name in ("zlib", "gzip", "bzip2", "lzma"):
        r = await echo.apply_async((text,), compression=name)
        back = await r.get(timeout=TIMEOUT)
        show(f"echo.apply_async((12 kB of text,), compression={name!r})",
             f"{len(back)} chars back, equal: {back == text}")
    r = await add.apply_async((10, 10), serializer="msgpack", compression="zlib")
    show("add.apply_async((10, 10), serializer='msgpack', compression='zlib')",
         await r.get(timeout=TIMEOUT))


async def routing_and_retry() -> None:
    section("routing, priority, publish retry")
    r = await add.apply_async((2, 2), queue="priority.high", priority=9)
    show("add.apply_async((2, 2), queue='priority.high', priority=9)",
         await r.get(timeout=TIMEOUT))
    r = await add.apply_async((2, 2), retry=True, retry_policy={
        "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
    })
    show("add.apply_async((2, 2), retry=True, retry_policy={...})",
         await r.get(timeout=TIMEOUT))
    r = await add.apply_async((2, 2), retry=False)
    show("add.apply_async((2, 2), retry=False)", await r.get(timeout=TIMEOUT))
    # Nothing listens on port 1: connecting fails at once, so the policy's retries show.
    offline = App("offline", broker="redis://127.0.0.1:1/0")
    policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("retry_policy={'max_retries': 2, ...}", {"retry_policy": policy}),
        ("retry=False", {"retry": False}),
    ]
    async with offline:
        for label, options in attempts:
            start = time.monotonic()
            try:
                await offline.send_task("examples.demo_tasks.add", args=(2, 2), **options)
            except add.OperationalError as exc:
                show(f"broker down, {label}: after {time.monotonic() - start:.1f}s",
                     type(exc).__name__)
            else:
                raise AssertionError("publishing to a closed port succeeded")


async def connections() -> None:
    section("send_task and producer_or_acquire")
    r = await app.send_task("examples.demo_tasks.add", args=(2, 2))
    show("app.send_task('examples.demo_tasks.add', args=(2, 2))", await r.get(timeout=TIMEOUT))
    numbers = [(2, 2), (4, 4), (8, 8), (16, 16)]
    results: list[AsyncResult[int]] = []
    async with app.producer_or_acquire() as producer:
        for i, j in numbers:
            results.append(await add.apply_async((i, j), producer=producer))
    show("add.apply_async(..., producer=producer) x4",
         [await res.get(timeout=TIMEOUT) for res in results])


async def tour() -> None:
    async with app:
        for step in (basics, timing, links, progress, canvas, serializers, compression,
                     routing_and_retry, connections):
            await step()


def stop(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return worker.returncode


def log_to_stdout() -> None:
    """Show this process's aiotq log lines (publish retries) in line with the output."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    log: %(message)s"))
    logging.getLogger("aiotq").addHandler(handler)


def main() -> int:
    log_to_stdout()
    # The demo runs on its own SQLite file, whatever this shell's broker variables say.
    for name in ("AIOTQ_BROKER_URL", "AIOTQ_RESULT_BACKEND"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="aiotq-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.db'}"
        app.conf.broker_url = url
        command = worker_command(url)
        print(f"broker: {url}")
        print("worker: aiotq " + " ".join(command[command.index("worker"):]))
        log_path = Path(tmp) / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
        try:
            asyncio.run(tour())
        except Exception:
            traceback.print_exc()
            stop(worker)
            print("\n-- worker log --\n" + log_path.read_text(errors="replace"))
            return 1
        code = stop(worker)
        lines = log_path.read_text(errors="replace").splitlines()
        print(f"\nworker stopped by SIGTERM with exit code {code}; its last log lines:")
        for line in lines[-3:]:
            print(f"  {line}")
    print(f"done in {time.monotonic() - STARTED:.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
