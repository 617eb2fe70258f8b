"""The ``aiotq`` command: run a worker, send a task, wait for its result.

Each command parses its options and hands the work to the library (``Worker``,
``App.send_task``, ``AsyncResult.get``). Exit codes: 0 done, 1 the task failed or was
revoked (or the broker could not be reached), 2 bad usage (a wrong ``-A``, bad JSON),
3 timed out waiting for a result, 128+N a second signal N ended a worker at once.
"""

import asyncio
import datetime as dt
import enum
import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Annotated, Any, NoReturn, Self

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from . import states
from ._loader import load_app
from .app import App
from .exceptions import ImproperlyConfigured, OperationalError, TransportError
from .exceptions import TimeoutError as ResultTimeout
from .result import AsyncResult
from .results.base import Meta
from .worker import Worker

logger = logging.getLogger("aiotq.cli")

cli = typer.Typer(
    name="aiotq",
    help="aiotq: an asyncio-native distributed task queue with Celery's calling API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 1, 2, 3


class LogLevel(enum.StrEnum):
    """``-l``: the level of the ``aiotq`` loggers."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


class LoopKind(enum.StrEnum):
    """``--loop``: the event loop implementation."""

    asyncio = "asyncio"
    uvloop = "uvloop"


AppSpec = Annotated[str | None, typer.Option(
    "-A", "--app", metavar="MODULE[:ATTR]",
    help="The App to use, as module:attribute; a bare module means its 'app' attribute. "
         "The current directory is importable.")]
BrokerUrl = Annotated[str | None, typer.Option(
    "-b", "--broker", metavar="URL",
    help="Broker URL (memory://, sqlite:///path.db, redis://..., amqp://...); overrides the "
         "app's setting and AIOTQ_BROKER_URL.")]
Timeout = Annotated[float | None, typer.Option(
    "--timeout", min=0, help="Give up waiting after this many seconds (exit code 3).")]


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def _resolve_app(spec: str | None, broker: str | None) -> App:
    """The ``-A`` app (or a bare one for call/result), with ``--broker`` applied."""
    try:
        app = load_app(spec) if spec else App("aiotq")
    except ImproperlyConfigured as exc:
        _fail(str(exc))
    if broker:
        app.conf.forced_urls = (broker, app.conf.forced_urls[1])
    return app


def _setup_logging(level: LogLevel) -> None:
    """Send the ``aiotq`` loggers' records at ``level`` and above to stderr, readably."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s %(levelname)s %(name)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger("aiotq")
    root.handlers[:] = [handler]
    root.setLevel(level.value.upper())


def _run(main: Coroutine[Any, Any, int], loop: LoopKind = LoopKind.asyncio) -> int:
    """Run ``main`` on a fresh event loop of the chosen kind; map connection errors."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop is LoopKind.uvloop:
        try:
            factory = importlib.import_module("uvloop").new_event_loop
        except ImportError:
            main.close()
            _fail("--loop uvloop needs uvloop: pip install 'aiotq[uvloop]'")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    except ImproperlyConfigured as exc:
        _fail(str(exc))
    except (OperationalError, TransportError) as exc:
        cause = str(exc.__cause__ or "")
        _fail(str(exc) if cause in str(exc) else f"{exc} ({cause})", EXIT_FAILED)


# -- aiotq worker --


class WarmShutdown:
    """First SIGTERM/SIGINT: stop the worker warmly. Second: leave at once, non-zero; the
    broker redelivers what this worker held once its leases lapse."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.signalled = False

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signalled:
            logger.warning("%s again: exiting at once; unfinished tasks will be redelivered",
                           name)
            sys.stderr.flush()
            os._exit(128 + signum)
        self.signalled = True
        logger.warning("%s: warm shutdown, finishing running tasks (up to %ss); "
                       "send it again to exit at once", name,
                       self.worker.app.conf.worker_shutdown_timeout)
        self.worker.stop()

    def __enter__(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self, signum)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _work(worker: Worker) -> int:
    """Run ``worker`` until drained (burst) or signalled; close the app's connections."""
    async with worker.app:
        with WarmShutdown(worker):
            await worker.run()
    return 0


@cli.command("worker")
def worker_command(
    app_spec: Annotated[str, typer.Option(
        "-A", "--app", metavar="MODULE[:ATTR]",
        help="The App whose tasks to run, as module:attribute (a bare module means its "
             "'app' attribute). The current directory is importable.")],
    queues: Annotated[str | None, typer.Option(
        "-Q", "--queues", metavar="Q1,Q2",
        help="Comma-separated queues to consume. Default: the app's task_default_queue.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(
        "-c", "--concurrency", min=1,
        help="Most tasks run at once. Default: the app's worker_concurrency.")] = None,
    loglevel: Annotated[LogLevel, typer.Option(
        "-l", "--loglevel", help="Log level of the aiotq loggers (printed on stderr).")
    ] = LogLevel.warning,
    burst: Annotated[bool, typer.Option(
        "--burst", help="Exit 0 once the queues are drained (nothing waiting or running).")
    ] = False,
    shutdown_timeout: Annotated[float | None, typer.Option(
        "--shutdown-timeout", min=0, metavar="SECONDS",
        help="On SIGTERM/SIGINT, how long running tasks may take to finish. Default: the "
             "app's worker_shutdown_timeout.")] = None,
    loop: Annotated[LoopKind, typer.Option(
        "--loop", help="Event loop implementation (uvloop must be installed).")
    ] = LoopKind.asyncio,
    hostname: Annotated[str | None, typer.Option(
        "-n", "--hostname", help="This worker's name in logs. Default: aiotq@host.pid.")
    ] = None,
    broker: BrokerUrl = None,
) -> None:
    """Run a worker: consume the queues and run the app's tasks.

    SIGTERM or SIGINT stops it warmly: it stops consuming, lets running tasks finish (up to
    --shutdown-timeout), gives held messages back to the broker and exits 0. A second
    signal exits at once with 128+signal; the broker redelivers unfinished tasks later.
    """
    _setup_logging(loglevel)
    app = _resolve_app(app_spec, broker)
    if shutdown_timeout is not None:
        app.conf.worker_shutdown_timeout = shutdown_timeout
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    worker = Worker(app, names, concurrency=concurrency, burst=burst, hostname=hostname)
    code = _run(_work(worker), loop)
    _leave_stuck_threads(code)
    raise typer.Exit(code)


def _leave_stuck_threads(code: int) -> None:
    """Exit now if a ``def`` task still runs past the shutdown timeout.

    A thread cannot be stopped, and the interpreter would wait for it at exit; its message
    already went back to the broker, so the worker leaves without it.
    """
    stuck = [thread for thread in threading.enumerate()
             if thread is not threading.main_thread() and not thread.daemon]
    if stuck:
        logger.warning("%d task thread(s) still running after the shutdown timeout; "
                       "exiting without waiting for them", len(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- aiotq call / aiotq result --


def _parse_json(text: str, option: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"{option} is not valid JSON: {exc}")
    if not isinstance(value, kind):
        _fail(f"{option} must be a JSON {'array' if kind is list else 'object'}: {text}")
    return value


def _parse_time(text: str, option: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{option} must be an ISO 8601 time like 2030-01-01T12:00:00+00:00: {text!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _parse_expires(text: str) -> float | dt.datetime:
    try:
        return float(text)
    except ValueError:
        return _parse_time(text, "--expires")


def _fraction(info: Any) -> tuple[float, float] | None:
    """(done, total) from a progress meta: ``{"current", "total"}`` or ``{"progress": %}``."""
    if not isinstance(info, dict):
        return None
    current, total = info.get("current"), info.get("total")
    if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
        return float(current), float(total)
    progress = info.get("progress")
    if isinstance(progress, int | float):
        return float(progress), 100.0
    return None


class StateView:
    """Shows a task's states as they arrive: a live bar on a terminal, plain lines else."""

    def __init__(self, task_id: str, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.bar: TaskID | None = None
        if console.is_terminal:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TaskProgressColumn(), TimeElapsedColumn(), console=console)
            self.bar = self.progress.add_task(f"task {task_id}", total=None)

    def __enter__(self) -> Self:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, meta: Meta) -> None:
        status = str(meta.get("status"))
        done = _fraction(meta.get("result"))
        if self.progress is not None and self.bar is not None:
            if done is not None:
                self.progress.update(self.bar, completed=done[0], total=done[1],
                                     description=status)
            elif status == states.SUCCESS:
                total = self.progress.tasks[0].total
                self.progress.update(self.bar, completed=total or 1, total=total or 1,
                                     description=status)
            else:
                self.progress.update(self.bar, description=status)
            return
        if done is not None:
            percent = 100 * done[0] / done[1]
            counts = f" ({done[0]:g}/{done[1]:g})" if done[1] != 100 else ""
            self.console.print(f"{status} {percent:.0f}%{counts}", highlight=False)
        elif status not in states.READY_STATES:
            self.console.print(status, highlight=False)


def _dump(value: Any) -> str:
    """A result as JSON (values JSON lacks, such as datetimes, as their str)."""
    return json.dumps(value, default=str, ensure_ascii=False)


def _report(result: AsyncResult[Any], value: Any) -> int:
    """Print a finished task's result (stdout) or its error and traceback (stderr)."""
    if result.state == states.SUCCESS:
        typer.echo(_dump(value))
        return 0
    if result.traceback:
        typer.echo(result.traceback.rstrip(), err=True)
    typer.echo(f"{result.state}: {type(value).__name__}: {value}", err=True)
    return EXIT_FAILED


async def _show(app: App, task_id: str, wait: bool, timeout: float | None) -> int:
    """Wait for ``task_id`` (showing its states) and report it, or show its state now."""
    result: AsyncResult[Any] = app.AsyncResult(task_id)
    if not wait:
        state = await result.refresh()
        if state in states.READY_STATES:
            return _report(result, result.info)
        info = result.info
        typer.echo(state if info is None else f"{state} {_dump(info)}")
        return 0
    try:
        with StateView(task_id, Console(stderr=True)) as view:
            value = await result.get(timeout=timeout, propagate=False, on_message=view)
    except ResultTimeout as exc:
        typer.echo(f"Error: {exc} (state {result.state})", err=True)
        return EXIT_TIMEOUT
    return _report(result, value)


async def _send_and_show(app: App, name: str, args: list[Any], kwargs: dict[str, Any],
                        options: dict[str, Any], wait: bool, timeout: float | None) -> int:
    async with app:
        result = await app.send_task(name, args=args, kwargs=kwargs, **options)
        typer.echo(result.id)
        return await _show(app, result.id, True, timeout) if wait else 0


@cli.command("call")
def call_command(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="The task's name, e.g. proj.tasks.add.")],
    args: Annotated[str, typer.Option(
        "--args", "-a", metavar="JSON", help="Positional arguments, a JSON array.")] = "[]",
    kwargs: Annotated[str, typer.Option(
        "--kwargs", "-k", metavar="JSON", help="Keyword arguments, a JSON object.")] = "{}",
    countdown: Annotated[float | None, typer.Option(
        "--countdown", min=0, metavar="SECONDS", help="Run no sooner than this from now.")
    ] = None,
    eta: Annotated[str | None, typer.Option(
        "--eta", metavar="ISO8601", help="Run no sooner than this time (no zone means UTC).")
    ] = None,
    expires: Annotated[str | None, typer.Option(
        "--expires", metavar="SECONDS|ISO8601",
        help="Not run after this: seconds from now, or a time. An expired task is REVOKED.")
    ] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-Q", help="Queue to send it to.")
    ] = None,
    priority: Annotated[int | None, typer.Option(
        "--priority", min=0, max=255, help="0-255, higher runs first.")] = None,
    serializer: Annotated[str | None, typer.Option(
        "--serializer", help="json, msgpack, yaml, pickle (the worker must accept it).")
    ] = None,
    compression: Annotated[str | None, typer.Option(
        "--compression", help="zlib, gzip, bzip2 or lzma.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", "-w", help="Wait for the result and print it (as in 'aiotq result --wait').")
    ] = False,
    timeout: Timeout = None,
    app_spec: AppSpec = None,
    broker: BrokerUrl = None,
) -> None:
    """Send a task by name and print its id (and, with --wait, its result).

    Example: aiotq call proj.tasks.add --args '[2, 2]' --countdown 5 -A proj.tasks
    """
    _setup_logging(LogLevel.warning)
    app = _resolve_app(app_spec, broker)
    options: dict[str, Any] = {
        "countdown": countdown, "queue": queue, "priority": priority,
        "serializer": serializer, "compression": compression,
        "eta": _parse_time(eta, "--eta") if eta else None,
        "expires": _parse_expires(expires) if expires else None,
    }
    options = {key: value for key, value in options.items() if value is not None}
    raise typer.Exit(_run(_send_and_show(
        app, name, _parse_json(args, "--args", list), _parse_json(kwargs, "--kwargs", dict),
        options, wait, timeout)))


async def _show_in(app: App, task_id: str, wait: bool, timeout: float | None) -> int:
    async with app:
        return await _show(app, task_id, wait, timeout)


@cli.command("result")
def result_command(
    task_id: Annotated[str, typer.Argument(
        metavar="ID", help="The task id that 'aiotq call' printed.")],
    wait: Annotated[bool, typer.Option(
        "--wait", "-w", help="Wait until the task is done, showing its progress (PROGRESS "
                             "states with {current, total} or {progress: percent}).")
    ] = False,
    timeout: Timeout = None,
    app_spec: AppSpec = None,
    broker: BrokerUrl = None,
) -> None:
    """Show a task's result as JSON, or its state when not done yet.

    A failed or revoked task prints its error and traceback on stderr and exits 1.
    """
    _setup_logging(LogLevel.warning)
    app = _resolve_app(app_spec, broker)
    if app.conf.backend.startswith("rpc://"):
        _fail("rpc:// results reach only the process that sent the task: use 'aiotq call "
              "--wait', or a result backend such as redis:// (AIOTQ_RESULT_BACKEND)")
    raise typer.Exit(_run(_show_in(app, task_id, wait, timeout)))


def main() -> None:
    """Entry point of the ``aiotq`` script."""
    cli()


if __name__ == "__main__":
    main()
