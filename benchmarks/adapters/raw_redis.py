"""The floor on Redis: redis-py asyncio (hiredis) streams with no framework at all.

Producer: ``XADD`` (gathered, or pipelined 100 at a time). Consumer: ``XREADGROUP`` 100 at a
time, then one pipeline that acks the batch (``XACK``), stores results (``SET ... EX``) and
answers round trips (``LPUSH`` to the caller's reply list, which it ``BLPOP``s).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..config import BATCH, REDIS_URL
from ..harness import chunks, tick
from .base import Adapter, Context

GROUP = "bench"


class RawRedisAdapter(Adapter):
    name = "raw-redis"
    pool = "one XREADGROUP loop, batches of 100"
    batch_api = True  # a pipeline of 100 XADDs

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.stream = f"{self.queue}:stream"
        self.client = Redis.from_url(REDIS_URL)

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, x: int, *, store: bool = False) -> Any:
        return await self.client.xadd(self.stream, {"x": x, "s": int(store)})

    async def send_many(self, xs: Sequence[int], *, store: bool) -> None:
        for batch in chunks(xs):
            async with self.client.pipeline(transaction=False) as pipe:
                for x in batch:
                    pipe.xadd(self.stream, {"x": x, "s": int(store)})
                await pipe.execute()

    async def call(self, x: int) -> Any:
        reply = f"{self.queue}:reply:{uuid.uuid4().hex}"
        await self.client.xadd(self.stream, {"x": x, "s": 1, "r": reply})
        popped = await self.client.blpop([reply], timeout=10)
        if popped is None:
            raise TimeoutError("no reply in 10 s")
        return int(popped[1])

    def run_worker(self) -> None:
        asyncio.run(self._consume())

    async def _consume(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:  # BUSYGROUP: made by an earlier run of this tag
            if "BUSYGROUP" not in str(exc):
                raise
        while True:
            response = await self.client.xreadgroup(GROUP, "c1", {self.stream: ">"},
                                                    count=BATCH, block=1000)
            for _, entries in response:
                await self._handle(entries)

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for entry_id, fields in entries:
                tick()
                result = fields[b"x"]
                if fields.get(b"s") == b"1":
                    pipe.set(f"{self.queue}:result:{entry_id.decode()}", result, ex=3600)
                if b"r" in fields:
                    pipe.lpush(fields[b"r"], result)
                    pipe.expire(fields[b"r"], 60)
            pipe.xack(self.stream, GROUP, *(entry_id for entry_id, _ in entries))
            await pipe.execute()


ADAPTER = RawRedisAdapter
