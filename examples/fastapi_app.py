"""A FastAPI service that sends tasks from its handlers.

Run the worker and the server side by side::

    aiotq worker -A examples.service_tasks:app
    uvicorn examples.fastapi_app:api

The App's connections live as long as the server: opened in the lifespan, closed after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from aiotq import AsyncResult

from .service_tasks import add, app, report


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await app.connect()
    try:
        yield
    finally:
        await app.close()


api = FastAPI(lifespan=lifespan)


@api.post("/add")
async def send_add(x: int, y: int) -> dict[str, str]:
    result = await add.delay(x, y)
    return {"task_id": result.id}


@api.post("/reports")
async def send_report(pages: int) -> dict[str, str]:
    result = await report.delay(pages)
    return {"task_id": result.id}


@api.get("/tasks/{task_id}")
async def task_state(task_id: str, wait: float = 0) -> dict[str, Any]:
    result: AsyncResult[Any] = AsyncResult(task_id, app=app)
    if wait:
        await result.get(timeout=wait, propagate=False)
    else:
        await result.refresh()
    return {"task_id": task_id, "state": result.state, "result": result.result}
