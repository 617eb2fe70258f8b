"""The web examples: a handler awaits task.delay(), a worker runs it, the client reads it."""

from __future__ import annotations

import httpx
from aiohttp.test_utils import TestClient, TestServer

from aiotq.testing import run_in_process
from examples import aiohttp_app, fastapi_app
from examples.service_tasks import app


async def test_fastapi_example() -> None:
    async with run_in_process(app):
        api = fastapi_app.api
        async with api.router.lifespan_context(api):
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                sent = (await client.post("/add", params={"x": 2, "y": 3})).json()
                done = (await client.get(f"/tasks/{sent['task_id']}",
                                         params={"wait": 5})).json()
                assert done == {"task_id": sent["task_id"], "state": "SUCCESS", "result": 5}
                report = (await client.post("/reports", params={"pages": 3})).json()
                state = (await client.get(f"/tasks/{report['task_id']}",
                                          params={"wait": 5})).json()
                assert state["result"] == "report of 3 pages"


async def test_aiohttp_example() -> None:
    async with run_in_process(app):
        async with TestClient(TestServer(aiohttp_app.make_app())) as client:
            sent = await (await client.post("/add", params={"x": 20, "y": 22})).json()
            response = await client.get(f"/tasks/{sent['task_id']}", params={"wait": "5"})
            assert await response.json() == {"task_id": sent["task_id"], "state": "SUCCESS",
                                             "result": 42}
