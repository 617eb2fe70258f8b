"""``aiotq worker`` / ``call`` / ``result`` as real processes sharing one broker.

Tasks of ``tests.apps.slow`` record every run in a file, so these tests count runs across
worker processes: a killed worker loses nothing, a warm shutdown finishes what runs, two
workers never run a task twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aiotq import App, AsyncResult
from tests.conftest import AMQP_URL, REDIS_URL

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "aiotq"
AIOTQ = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "aiotq.cli"]
SLOW = "tests.apps.slow"
LEASE = 2.0

#: Brokers the worker-process tests run on.
BROKERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(REDIS_URL, id="redis", marks=pytest.mark.redis),
    pytest.param(AMQP_URL, id="amqp", marks=pytest.mark.amqp),
]
#: Brokers whose results another process can read (``aiotq result``): rpc:// results of
#: RabbitMQ reach only the process that sent the task.
SHARED_RESULTS = BROKERS[:2]
shared_results = pytest.mark.parametrize("broker_url", SHARED_RESULTS, indirect=True)

@dataclass
class Cluster:
    """Worker processes of ``tests.apps.slow`` on one broker, and a producer app."""

    url: str
    queue: str
    tmp: Path
    app: App
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def runs_file(self) -> Path:
        return self.tmp / "runs.log"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "AIOTQ_BROKER_URL": self.url, "AIOTQ_TEST_QUEUE": self.queue,
                "AIOTQ_TEST_RUNS": str(self.runs_file), "AIOTQ_TEST_LEASE": str(LEASE)}

    def worker(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start ``aiotq worker -A tests.apps.slow``; its log goes to a file of its own."""
        log = (self.tmp / f"worker{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([*AIOTQ, "worker", "-A", SLOW, "-Q", self.queue, "-l", "info",
                                 *extra], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*AIOTQ, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')}"
                         for path in sorted(self.tmp.glob("*.log")))

    def runs(self, event: str, tag: str) -> list[int]:
        """The pids of the runs of ``tag`` that reached ``event`` (start or end)."""
        if not self.runs_file.exists():
            return []
        lines = self.runs_file.read_text().splitlines()
        return [int(pid) for kind, name, pid in map(str.split, lines)
                if kind == event and name == tag]

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 10
                    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            await asyncio.sleep(0.05)

    async def exit_code(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        await self.until(lambda: proc.poll() is not None, f"pid {proc.pid} to exit", timeout)
        return proc.returncode

    async def send(self, task: str, *args: Any) -> AsyncResult[Any]:
        return await self.app.send_task(f"{SLOW}.{task}", args=args, queue=self.queue)


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest, resolve_url: Callable[[str], str]) -> str:
    """A broker URL for this test (skipped when its server does not answer); the conftest's
    resolve_url cleans up after it."""
    return resolve_url(request.param)


@pytest.fixture
async def cluster(broker_url: str, queue_name: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    app = App("producer", broker=broker_url)
    cluster = Cluster(broker_url, queue_name, tmp_path, app)
    try:
        yield cluster
    finally:
        for proc in cluster.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        await app.broker.purge(queue_name)
        await app.close()


async def test_sigkill_mid_task_runs_it_again_in_a_new_worker(cluster: Cluster) -> None:
    first = cluster.worker()
    result = await cluster.send("sleepy", 1.0, "killed")
    await cluster.until(lambda: bool(cluster.runs("start", "killed")), "the task to start")
    first.send_signal(signal.SIGKILL)
    await cluster.exit_code(first, 5)
    second = cluster.worker()

    assert await result.get(timeout=LEASE + 10) == "killed"
    assert cluster.runs("start", "killed") == [first.pid, second.pid]
    assert cluster.runs("end", "killed") == [second.pid]


async def test_sigterm_lets_the_running_task_finish_and_exits_0(cluster: Cluster) -> None:
    worker = cluster.worker()
    result = await cluster.send("sleepy", 1.0, "term")
    await cluster.until(lambda: bool(cluster.runs("start", "term")), "the task to start")
    worker.send_signal(signal.SIGTERM)

    assert await cluster.exit_code(worker, 10) == 0, cluster.logs()
    assert cluster.runs("end", "term") == [worker.pid]
    assert await result.get(timeout=5) == "term"
    assert "warm shutdown" in cluster.logs()


async def test_second_sigterm_exits_at_once_and_the_task_is_redelivered(
        cluster: Cluster) -> None:
    first = cluster.worker()
    result = await cluster.send("sleepy", 2.5, "twice")
    await cluster.until(lambda: bool(cluster.runs("start", "twice")), "the task to start")
    first.send_signal(signal.SIGTERM)
    await cluster.until(lambda: "warm shutdown" in cluster.logs(), "the first signal")
    first.send_signal(signal.SIGTERM)

    assert await cluster.exit_code(first, 1.5) == 128 + signal.SIGTERM
    assert cluster.runs("end", "twice") == []
    second = cluster.worker()
    assert await result.get(timeout=LEASE + 10) == "twice"
    assert cluster.runs("end", "twice") == [second.pid]


async def test_a_def_task_past_the_shutdown_timeout_does_not_hold_the_exit(
        cluster: Cluster) -> None:
    worker = cluster.worker("--shutdown-timeout", "0.5")
    await cluster.send("stuck", 5.0, "stuck")
    await cluster.until(lambda: bool(cluster.runs("start", "stuck")), "the task to start")
    worker.send_signal(signal.SIGTERM)

    assert await cluster.exit_code(worker, 3) == 0, cluster.logs()
    assert "still running after the shutdown timeout" in cluster.logs()


async def test_two_workers_run_each_task_exactly_once(cluster: Cluster) -> None:
    tags = [f"n{i}" for i in range(30)]
    results = [await cluster.send("sleepy", 0.05, tag) for tag in tags]
    workers = [cluster.worker("--burst", "-c", "4") for _ in range(2)]

    assert [await r.get(timeout=20) for r in results] == tags
    for worker in workers:
        assert await cluster.exit_code(worker, 10) == 0, cluster.logs()
    pids = {worker.pid for worker in workers}
    for tag in tags:
        assert len(cluster.runs("start", tag)) == 1, (tag, cluster.logs())
        assert len(cluster.runs("end", tag)) == 1
        assert set(cluster.runs("end", tag)) <= pids


async def test_a_long_task_on_a_live_worker_is_never_taken_over(cluster: Cluster) -> None:
    # Leases, not timeouts: running for three lease timeouts, with a second worker waiting.
    first = cluster.worker()
    result = await cluster.send("sleepy", 3 * LEASE, "long")
    await cluster.until(lambda: bool(cluster.runs("start", "long")), "the task to start")
    second = cluster.worker()

    assert await result.get(timeout=3 * LEASE + 10) == "long"
    assert cluster.runs("start", "long") == [first.pid], cluster.logs()
    assert cluster.runs("end", "long") == [first.pid]
    await asyncio.sleep(LEASE)  # a wrongful takeover would start a second run by now
    assert cluster.runs("start", "long") == [first.pid], cluster.logs()
    assert second.poll() is None


async def test_burst_drains_the_queue_and_exits_0(cluster: Cluster) -> None:
    results = [await cluster.send("add", i, i) for i in range(5)]
    worker = cluster.worker("--burst")

    assert await cluster.exit_code(worker, 15) == 0, cluster.logs()
    assert [await r.get(timeout=5) for r in results] == [0, 2, 4, 6, 8]


@pytest.mark.parametrize("broker_url", BROKERS[:1], indirect=True)
async def test_loop_uvloop_runs_the_worker_on_uvloop(cluster: Cluster) -> None:
    on_default = await cluster.send("event_loop")
    assert await cluster.exit_code(cluster.worker("--burst"), 15) == 0, cluster.logs()
    on_uvloop = await cluster.send("event_loop")
    assert await cluster.exit_code(cluster.worker("--burst", "--loop", "uvloop"), 15) == 0

    assert await on_default.get(timeout=5) == "asyncio.unix_events"
    assert (await on_uvloop.get(timeout=5)).startswith("uvloop"), cluster.logs()


@shared_results
async def test_call_then_result_wait_round_trip(cluster: Cluster) -> None:
    cluster.worker()
    sent = cluster.cli("call", f"{SLOW}.add", "--args", "[2, 3]", "-A", SLOW)
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()

    shown = cluster.cli("result", task_id, "--wait", "--timeout", "15", "-A", SLOW)
    assert (shown.returncode, shown.stdout.strip()) == (0, "5"), shown.stderr
    again = cluster.cli("result", task_id, "-A", SLOW)
    assert (again.returncode, again.stdout.strip()) == (0, "5"), again.stderr


@shared_results
async def test_call_wait_shows_progress_then_the_result(cluster: Cluster) -> None:
    cluster.worker()
    done = cluster.cli("call", f"{SLOW}.count_to", "--args", "[3, 0.05]", "--wait",
                       "--timeout", "15", "-A", SLOW)

    assert done.returncode == 0, done.stderr
    task_id, value = done.stdout.split()
    assert len(task_id) == 36 and value == "3"
    assert "PROGRESS 0% (0/3)" in done.stderr
    assert "PROGRESS 67% (2/3)" in done.stderr


@shared_results
async def test_result_of_a_failed_task_prints_the_traceback_and_exits_1(
        cluster: Cluster) -> None:
    cluster.worker()
    result = await cluster.send("broken", "no luck")
    shown = cluster.cli("result", result.id, "--wait", "--timeout", "15", "-A", SLOW)

    assert shown.returncode == 1
    assert shown.stdout == ""
    assert "Traceback (most recent call last)" in shown.stderr
    assert shown.stderr.rstrip().endswith("FAILURE: ValueError: no luck")


@shared_results
async def test_result_wait_times_out_with_exit_3(cluster: Cluster) -> None:
    result = await cluster.send("add", 1, 1)
    shown = cluster.cli("result", result.id, "--wait", "--timeout", "0.5", "-A", SLOW)

    assert shown.returncode == 3
    assert "not ready after 0.5s" in shown.stderr


def test_result_refuses_rpc_results_it_cannot_see() -> None:
    env = {**os.environ, "AIOTQ_BROKER_URL": AMQP_URL}
    env.pop("AIOTQ_RESULT_BACKEND", None)
    done = subprocess.run([*AIOTQ, "result", "some-id"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=20, check=False)

    assert done.returncode == 2
    assert done.stderr.startswith("Error: rpc:// results reach only the process that sent")


@pytest.mark.parametrize("spec", ["tests.apps.nosuch:app", f"{SLOW}:nope", "tests.apps"])
def test_wrong_app_exits_2_with_one_clear_line(spec: str, tmp_path: Path) -> None:
    env = {**os.environ, "AIOTQ_BROKER_URL": f"sqlite:///{tmp_path / 'unused.db'}"}
    done = subprocess.run([*AIOTQ, "worker", "-A", spec], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=20, check=False)

    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("Error: ") and "Traceback" not in done.stderr
