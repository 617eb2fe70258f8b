"""An aiohttp service that sends tasks from its handlers.

Run the worker and the server side by side::

    aiotq worker -A examples.service_tasks:app
    python -m aiohttp.web -H 127.0.0.1 -P 8080 examples.aiohttp_app:make_app

The App's connections live as long as the server, through ``cleanup_ctx``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from aiotq import AsyncResult

from .service_tasks import add, app


async def aiotq_connections(_: web.Application) -> AsyncIterator[None]:
    await app.connect()
    yield
    await app.close()


async def send_add(request: web.Request) -> web.Response:
    x, y = int(request.query["x"]), int(request.query["y"])
    result = await add.delay(x, y)
    return web.json_response({"task_id": result.id})


async def task_state(request: web.Request) -> web.Response:
    result: AsyncResult[Any] = AsyncResult(request.match_info["task_id"], app=app)
    wait = float(request.query.get("wait", 0))
    if wait:
        await result.get(timeout=wait, propagate=False)
    else:
        await result.refresh()
    return web.json_response({"task_id": result.id, "state": result.state,
                              "result": result.result})


def make_app(argv: list[str] | None = None) -> web.Application:
    web_app = web.Application()
    web_app.cleanup_ctx.append(aiotq_connections)
    web_app.router.add_post("/add", send_add)
    web_app.router.add_get("/tasks/{task_id}", task_state)
    return web_app
