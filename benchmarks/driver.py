"""One measurement, or one worker, in a process of its own (so frameworks never share an
interpreter and a hung one can be killed alone).

    python -m benchmarks.driver measure --adapter aiotq --broker redis --scenario B1 --tag x
    python -m benchmarks.driver worker  --adapter aiotq --broker redis --tag x [--store]
    python -m benchmarks.driver cleanup --adapter aiotq --broker redis --tag x

``measure`` prints one JSON line last: ``{"ok": true, "values": {...}}``, or
``{"ok": false, "na": "why"}`` for an unsupported feature, or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import traceback
from typing import Any

from . import scenarios
from .adapters import Adapter, Context, NotSupported, load
from .config import FULL, QUICK, REDIS_URL


async def _clean_redis(patterns: list[str]) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        for pattern in patterns:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)
    finally:
        await client.aclose()


async def _clean_amqp(queues: list[str], exchanges: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(Context("amqp", "").url)
    async with connection:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                # A failed delete closes the channel, so each gets its own.
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                with contextlib.suppress(Exception):
                    await channel.close()


async def cleanup(adapter: Adapter) -> None:
    """Delete everything this run created: keys (brokers and result backends), queues, files."""
    ctx = adapter.ctx
    await _clean_redis(adapter.redis_patterns())
    if ctx.broker == "amqp":
        await _clean_amqp(*adapter.amqp_names())
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = ctx.sqlite_path.with_name(ctx.sqlite_path.name + suffix)
        path.unlink(missing_ok=True)


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    adapter = load(args.adapter)(scenarios.context(args.broker, args.tag, args.scenario))
    try:
        await adapter.open()
        try:
            values = await scenarios.measure(adapter, sizes, args.scenario)
        finally:
            await adapter.close()
    except NotSupported as exc:
        return {"ok": False, "na": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        with contextlib.suppress(Exception):
            await cleanup(adapter)
    return {"ok": True, "values": values}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.driver")
    parser.add_argument("command", choices=("measure", "worker", "cleanup"))
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--scenario", default="")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--store", action="store_true")
    parser.add_argument("--tuned", action="store_true")
    return parser


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    adapter = load(args.adapter)
    if args.command == "worker":
        adapter(Context(args.broker, args.tag, args.store, args.tuned)).run_worker()
    elif args.command == "cleanup":
        asyncio.run(cleanup(adapter(Context(args.broker, args.tag))))
    else:
        print(json.dumps(adapter.run(_measure(args))), flush=True)


if __name__ == "__main__":
    main()
