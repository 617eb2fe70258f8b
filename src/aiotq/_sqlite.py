"""What the SQLite broker and result backend share: the URL, one connection on a thread of
its own, transactions, and wake-ups within a process and across processes.

Wake-ups across processes poll ``PRAGMA data_version``, which changes whenever another
connection commits to the file. Reading it touches only the WAL index in shared memory (no
disk I/O, no write lock), so polling every 2 ms right after activity, backing off to 50 ms
when nothing changes, costs about 1% of a core while something waits. It needs nothing
beside the database file: unix sockets next to it would wake faster, but bring stale socket
files left by killed processes, a 108-byte path limit that deep temporary folders exceed,
and a directory scan on every commit. Only instances with a waiter poll; an idle process sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from ._batching import Batcher
from ._waiters import Waiters, wait_any
from .exceptions import ImproperlyConfigured, TransportError

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
#: What a connection has seen: the file's ``data_version`` (commits of other connections)
#: and the connection's own ``total_changes``. Any commit after a stamp changes it.
Stamp = tuple[int, int]

logger = logging.getLogger(__name__)

POLL_FAST = 0.002
POLL_SLOW = 0.05
POLL_BACKOFF = 1.5
SYNCHRONOUS = ("off", "normal", "full", "extra")


@dataclass(frozen=True, slots=True)
class Mark:
    """When a query ran: the process's notification count before it, the stamp with it."""

    notified: int
    stamp: Stamp


class _Signal:
    """This process's wake-ups for one file: shared by the app's instances on every loop."""

    def __init__(self) -> None:
        self.waiters = Waiters()
        self.count = 0

    def notify(self) -> None:
        self.count += 1
        self.waiters.notify_all()


@dataclass(frozen=True, slots=True)
class Location:
    """Where the database file is and how to open it, from ``sqlite:///path.db?opt=value``."""

    path: str
    synchronous: str = "normal"
    busy_timeout: float = 5.0


def parse_url(url: str) -> Location:
    """Read a ``sqlite://`` URL the way SQLAlchemy does.

    ``sqlite:///aiotq.db`` and ``sqlite://aiotq.db`` are relative to the working directory,
    ``sqlite:////var/lib/aiotq.db`` is absolute. Options: ``synchronous`` (off, normal,
    full, extra) and ``busy_timeout`` (seconds).
    """
    rest = url.split("://", 1)[-1]
    rest, _, query = rest.partition("?")
    path = rest[1:] if rest.startswith("/") else rest
    if not path or path == ":memory:":
        raise ImproperlyConfigured(
            f"{url!r} names no database file; use sqlite:///path.db (memory:// for in-process)"
        )
    options = dict(parse_qsl(query))
    unknown = set(options) - {"synchronous", "busy_timeout"}
    if unknown:
        raise ImproperlyConfigured(f"unknown sqlite URL options {sorted(unknown)} in {url!r}")
    synchronous = options.get("synchronous", "normal").lower()
    if synchronous not in SYNCHRONOUS:
        raise ImproperlyConfigured(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
    try:
        busy_timeout = float(options.get("busy_timeout", 5.0))
    except ValueError:
        raise ImproperlyConfigured(f"busy_timeout is not a number in {url!r}") from None
    return Location(os.path.abspath(os.path.expanduser(path)), synchronous, busy_timeout)


def _stamp(conn: sqlite3.Connection) -> Stamp:
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version), conn.total_changes


def _stamped(job: Job[T], conn: sqlite3.Connection) -> tuple[Stamp, T]:
    return _stamp(conn), job(conn)


def in_transaction(job: Job[T], conn: sqlite3.Connection) -> T:
    """Run ``job`` in a write transaction. IMMEDIATE takes the write lock up front, so a
    transaction never fails half-way for a lock another process holds (busy_timeout waits)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = job(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def in_one_transaction(jobs: Sequence[Job[Any]], conn: sqlite3.Connection
                       ) -> list[Any | Exception]:
    """Run ``jobs`` in one write transaction, one commit for all (group commit); when one
    of them fails, run each in a transaction of its own instead, so that it fails alone."""
    try:
        return in_transaction(lambda conn: [job(conn) for job in jobs], conn)
    except Exception:
        if len(jobs) == 1:
            raise
    outcomes: list[Any | Exception] = []
    for job in jobs:
        try:
            outcomes.append(in_transaction(job, conn))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _create(schema: Sequence[str], conn: sqlite3.Connection) -> None:
    for statement in schema:
        conn.execute(statement)


#: Where a job's outcome goes: ``reply(result, exception)``, called on the thread.
_Reply = Callable[[Any, BaseException | None], None]
_Item = tuple[Job[Any] | None, _Reply]


class _Thread:
    """One sqlite3 connection, opened and used only on its own thread (as aiosqlite does).

    Jobs run one at a time in submission order; each hands its outcome back to the loop
    that submitted it. A ``None`` job closes the connection and ends the thread.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._items: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        threading.Thread(target=self._serve, args=(connect,), name=name, daemon=True).start()

    def submit(self, job: Job[T] | None) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._items.put((job, functools.partial(_hand_over, loop, future)))
        return future

    def abandon(self) -> None:
        """Close and end without answering anyone: the owner was garbage-collected."""
        self._items.put((None, _ignore))

    def _serve(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            job, reply = self._items.get()
            try:
                result = None
                if job is None and conn is not None:
                    conn.close()
                elif job is not None:
                    if conn is None:
                        conn = connect()
                    result = job(conn)
            except BaseException as exc:
                reply(None, exc)
            else:
                reply(result, None)
            if job is None:
                return


def _ignore(result: Any, exc: BaseException | None) -> None:
    return None


def _hand_over(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
               exc: BaseException | None) -> None:
    # A closed loop has nobody left waiting for the answer.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result, exc)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _connect(where: Location) -> sqlite3.Connection:
    conn = sqlite3.connect(where.path, timeout=where.busy_timeout, isolation_level=None)
    try:
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute(f"PRAGMA synchronous={where.synchronous}")
    except BaseException:
        conn.close()
        raise
    if str(mode).lower() != "wal":
        logger.warning("%s: WAL is not available here (journal mode %s); several "
                       "processes will wait on each other more", where.path, mode)
    return conn


class Database:
    """One database file as one event loop's broker or backend instance sees it.

    ``run(job)`` runs ``job(connection)`` on the connection's thread (opening it on first
    use), translating sqlite errors to :class:`TransportError`. ``write(job)`` does the same
    in a write transaction and wakes this process's waiters; the writes that come while one
    is in flight share the next transaction. ``observe(job)`` runs a query
    and marks when; ``wait(mark)`` returns once anything was committed after that mark (by
    any process), or on timeout.
    """

    def __init__(self, url: str, shared: dict[str, Any], kind: str, schema: Sequence[str]
                 ) -> None:
        self.location = parse_url(url)
        self._kind = kind
        self._schema = tuple(schema)
        self._signal: _Signal = shared.setdefault(
            f"aiotq.sqlite.{kind}:{self.location.path}", _Signal()
        )
        self._thread: _Thread | None = None
        self._finalizer: weakref.finalize[[], Database] | None = None
        self._armed: dict[asyncio.Future[None], Stamp] = {}
        self._poller: asyncio.Task[None] | None = None
        self._interval = POLL_SLOW
        self._writes: Batcher[Job[Any], Any] = Batcher(self._write_together)

    async def open(self) -> None:
        if self._thread is not None:
            return
        connect = functools.partial(_connect, self.location)
        self._thread = _Thread(connect, name=f"aiotq-sqlite-{self._kind}")
        # An instance dropped without close() (its loop ended) must not keep its thread.
        self._finalizer = weakref.finalize(self, self._thread.abandon)
        try:
            await self.run(functools.partial(in_transaction,
                                             functools.partial(_create, self._schema)))
        except BaseException:
            # Only the thread: the first write may be what opens, from within the flush
            # that close() would wait for.
            await self._close_thread()
            raise

    async def close(self) -> None:
        await self._writes.close()
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await self._close_thread()

    async def _close_thread(self) -> None:
        thread, self._thread = self._thread, None
        if self._finalizer is not None:
            self._finalizer.detach()
        if thread is not None:
            await thread.submit(None)

    async def run(self, job: Job[T]) -> T:
        if self._thread is None:
            await self.open()
        assert self._thread is not None
        try:
            return await self._thread.submit(job)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def write(self, job: Job[T], *, notify: bool = True) -> T:
        result: T = await self._writes.submit(job)
        if notify:
            self._signal.notify()
        return result

    async def _write_together(self, jobs: list[Job[Any]]) -> list[Any | Exception]:
        outcomes = await self.run(functools.partial(in_one_transaction, jobs))
        return [self._error(outcome) if isinstance(outcome, sqlite3.Error) else outcome
                for outcome in outcomes]

    def _error(self, exc: sqlite3.Error) -> TransportError:
        error = TransportError(f"sqlite database {self.location.path}: {exc}")
        error.__cause__ = exc
        return error

    async def observe(self, job: Job[T]) -> tuple[Mark, T]:
        """Run the query ``job``, with the mark to :meth:`wait` on when it found nothing."""
        notified = self._signal.count
        stamp, result = await self.run(functools.partial(_stamped, job))
        return Mark(notified, stamp), result

    async def wait(self, since: Mark, timeout: float | None = None,
                   sleeper: asyncio.Future[None] | None = None) -> None:
        """Until a commit after ``since``, ``sleeper`` finishing, or ``timeout`` (real s)."""
        if self._signal.count != since.notified:
            if sleeper is not None:
                sleeper.cancel()
            return
        waiter = self._signal.waiters.new()
        self._armed[waiter] = since.stamp
        waiter.add_done_callback(self._disarm)
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wait_any(waiter, sleeper)

    def _disarm(self, waiter: asyncio.Future[None]) -> None:
        self._armed.pop(waiter, None)

    async def _poll(self) -> None:
        try:
            while self._armed:
                await asyncio.sleep(self._interval)
                try:
                    current: Stamp | None = await self.run(_stamp)
                except TransportError:
                    current = None  # wake everyone: their own queries will raise it
                self._wake_changed(current)
        finally:
            if self._poller is asyncio.current_task():
                self._poller = None

    def _wake_changed(self, current: Stamp | None) -> None:
        changed = [w for w, since in self._armed.items() if since != current and not w.done()]
        for waiter in changed:
            waiter.set_result(None)
        self._interval = POLL_FAST if changed else min(self._interval * POLL_BACKOFF, POLL_SLOW)
