"""Result backend in one SQLite file (``sqlite:///aiotq.db``), beside the broker's tables.

Each stored state is a row of ``aiotq_results``; a task's newest row is its result, its
rows in ``id`` order are the history that ``watch`` replays. Every row expires
``result_expires`` after it was stored: reads skip expired rows and each store deletes a
bounded batch of them. See docs/brokers/sqlite.md.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncGenerator, Sequence

from .._sqlite import Database
from .base import BackendContext, Meta

#: Most expired rows one store deletes, so that a store never turns into a long write.
SWEEP_BATCH = 1000
#: Most task ids in one ``IN (...)`` (SQLite's smallest limit on parameters is 999).
IN_CHUNK = 500

SCHEMA = (
    # AUTOINCREMENT never reuses an id, even after forget(): a watcher resumes after the
    # last id it saw, and writers commit in id order.
    """CREATE TABLE IF NOT EXISTS aiotq_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        expires_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS aiotq_results_task ON aiotq_results (task_id, id)",
    """CREATE INDEX IF NOT EXISTS aiotq_results_expiry
        ON aiotq_results (expires_at) WHERE expires_at IS NOT NULL""",
)

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def _append(task_id: str, payload: bytes, expires_at: float | None, history: int, now: float,
            conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO aiotq_results (task_id, payload, expires_at) VALUES (?, ?, ?)",
        (task_id, payload, expires_at),
    )
    conn.execute(
        """DELETE FROM aiotq_results WHERE task_id = ?1 AND id <= (
               SELECT id FROM aiotq_results WHERE task_id = ?1
               ORDER BY id DESC LIMIT 1 OFFSET ?2)""",
        (task_id, history),
    )
    conn.execute(
        """DELETE FROM aiotq_results WHERE id IN (
               SELECT id FROM aiotq_results WHERE expires_at <= ? LIMIT ?)""",
        (now, SWEEP_BATCH),
    )


def _latest(task_id: str, now: float, conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute(
        f"""SELECT payload FROM aiotq_results WHERE task_id = ? AND {_LIVE}
            ORDER BY id DESC LIMIT 1""",
        (task_id, now),
    ).fetchone()
    return None if row is None else bytes(row[0])


def _states_after(task_ids: Sequence[str], after: int, now: float, conn: sqlite3.Connection
                  ) -> list[tuple[int, bytes]]:
    rows: list[tuple[int, bytes]] = []
    for start in range(0, len(task_ids), IN_CHUNK):
        chunk = task_ids[start:start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows += conn.execute(
            f"""SELECT id, payload FROM aiotq_results
                WHERE task_id IN ({marks}) AND id > ? AND {_LIVE}""",
            (*chunk, after, now),
        )
    return sorted(rows)


def _forget(task_id: str, conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM aiotq_results WHERE task_id = ?", (task_id,))


class SQLiteBackend:
    """``sqlite:///path.db`` result backend: states pushed to watchers in every process.

    One instance belongs to one event loop and owns one connection (on its own thread).
    """

    def __init__(self, context: BackendContext) -> None:
        self._context = context
        self._db = Database(context.url, context.shared, "results", SCHEMA)

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def on_task_call(self, task_id: str) -> str | None:
        return None

    async def store(self, meta: Meta, *, reply_to: str | None = None) -> None:
        settings = self._context.settings
        now = self._context.clock.time()
        expires_at = now + settings.result_expires if settings.result_expires else None
        payload = self._context.encode(meta)
        await self._db.write(functools.partial(
            _append, str(meta["task_id"]), payload, expires_at, settings.result_state_history,
            now,
        ))

    async def get(self, task_id: str) -> Meta | None:
        now = self._context.clock.time()
        payload = await self._db.run(functools.partial(_latest, task_id, now))
        return None if payload is None else self._context.decode(payload)

    async def watch(self, task_ids: Sequence[str]) -> AsyncGenerator[Meta, None]:
        ids = tuple(dict.fromkeys(task_ids))
        after = 0
        while True:
            job = functools.partial(_states_after, ids, after, self._context.clock.time())
            mark, rows = await self._db.observe(job)
            for row_id, payload in rows:
                after = row_id
                yield self._context.decode(payload)
            if not rows:
                await self._db.wait(mark)

    async def forget(self, task_id: str) -> None:
        await self._db.write(functools.partial(_forget, task_id), notify=False)
