"""huey on Redis (``RedisHuey``) and SQLite (``SqliteHuey``).

huey stores a result only when the task returns something other than None, so the B1 task
returns None. Its calls are blocking; its consumer polls the queue (SQLite) and
``Result.get`` polls the result, so tuned, every delay is 1 ms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey

from ..config import REDIS_URL
from ..harness import noop
from .base import Adapter, Context

#: Worker threads of the one consumer process: 32 drained faster than 8 or 100 here
#: (4,300 vs 3,100 and 2,600 tasks/s on Redis). Override to compare.
WORKERS = int(os.environ.get("BENCH_HUEY_WORKERS", "32"))


def noop_unstored(x: int) -> None:
    noop(x)  # returns None, so huey stores nothing


class HueyAdapter(Adapter):
    name = "huey"
    pool = f"thread workers, {WORKERS}"
    polls = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        if ctx.broker == "redis":
            self.huey: Huey = RedisHuey(self.queue, url=REDIS_URL)
        else:
            self.huey = SqliteHuey(self.queue, filename=str(ctx.sqlite_path))
        self.noop = self.huey.task(name="noop")(noop_unstored)
        self.noop_stored = self.huey.task(name="noop_stored")(noop)
        self.delay = 0.001 if ctx.tuned else None

    async def send(self, x: int, *, store: bool = False) -> Any:
        return (self.noop_stored if store else self.noop)(x)

    async def send_later(self, xs: Sequence[int], delay: float) -> None:
        for x in xs:
            self.noop.schedule(args=(x,), delay=delay)

    async def call(self, x: int) -> Any:
        result = self.noop_stored(x)
        if self.delay is None:
            return result.get(blocking=True, timeout=10)
        return result.get(blocking=True, timeout=10, backoff=1.0, max_delay=self.delay)

    def run_worker(self) -> None:
        delays = ({"initial_delay": self.delay, "backoff": 1.0, "max_delay": self.delay}
                  if self.delay else {})
        consumer = self.huey.create_consumer(workers=WORKERS, worker_type="thread",
                                             periodic=False, **delays)
        consumer.run()


ADAPTER = HueyAdapter
